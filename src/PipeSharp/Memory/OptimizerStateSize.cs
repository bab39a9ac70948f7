using System.Reflection;
using static TorchSharp.torch;

namespace PipeSharp.Memory;

/// <summary>
/// How much state an optimizer keeps per parameter, derived from its type (and the options that add state): Adam,
/// AdamW, Adamax, NAdam, RAdam: 2 tensors of the parameter's size (3 with amsgrad); SGD: 1 with momentum, else 0;
/// RMSprop: 1, plus 1 with momentum and 1 centred; Adagrad, Adadelta (2), Rprop (2), ASGD (1). An optimizer of another
/// type is taken to keep 2 (as Adam), which the description says.
/// </summary>
internal static class OptimizerStateSize
{
    /// <summary>The factor and a description of where it comes from.</summary>
    public static (double Factor, string Source) Of(optim.Optimizer optimizer)
    {
        string type = optimizer.GetType().Name;
        double Option(string name) => Read(optimizer, name);
        (double factor, string why) = type switch
        {
            "Adam" or "AdamW" or "Adamax" or "NAdam" or "RAdam" => Option("amsgrad") != 0 ? (3, "with amsgrad") : (2, ""),
            "SGD" => Option("momentum") != 0 ? (1, "with momentum") : (0, "without momentum"),
            "RMSProp" => (1 + (Option("momentum") != 0 ? 1 : 0) + (Option("centered") != 0 ? 1 : 0), ""),
            "Adagrad" or "ASGD" => (1, ""),
            "Adadelta" or "Rprop" => (2, ""),
            _ => (-1, ""),
        };
        if (factor < 0) return (2, $"{type}: unknown to the memory model, taken as 2 x parameters (as Adam)");
        return (factor, $"{type}{(why.Length > 0 ? " " + why : "")}: {factor:0} x parameters, from the optimizer type");
    }

    // An option of the optimizer's first parameter group (a field or property, any case), as a number: 0 when absent.
    private static double Read(optim.Optimizer optimizer, string name)
    {
        var group = optimizer.ParamGroups.FirstOrDefault();
        // The most derived Options property (a typed ParamGroup hides the base one).
        var property = group?.GetType().GetProperties().Where(p => p.Name == "Options" && p.GetIndexParameters().Length == 0)
            .OrderBy(p => p.DeclaringType == group.GetType() ? 0 : 1).FirstOrDefault();
        object? options = property?.GetValue(group);
        if (options is null) return 0;
        const BindingFlags flags = BindingFlags.Public | BindingFlags.Instance | BindingFlags.IgnoreCase;
        object? value = options.GetType().GetField(name, flags)?.GetValue(options)
                        ?? options.GetType().GetProperty(name, flags)?.GetValue(options);
        return value switch
        {
            bool b => b ? 1 : 0,
            double d => d,
            float f => f,
            int i => i,
            null => 0,
            _ => Convert.ToDouble(value, System.Globalization.CultureInfo.InvariantCulture),
        };
    }
}
