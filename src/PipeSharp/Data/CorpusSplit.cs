namespace PipeSharp.Data;

/// <summary>Which part of a data set a batch is drawn from.</summary>
public enum CorpusSplit
{
    /// <summary>The part trained on.</summary>
    Train,

    /// <summary>The held-out part the validation loss is measured on.</summary>
    Validation,
}
