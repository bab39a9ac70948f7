namespace PipeSharp.Tests.Mpi;

/// <summary>
/// Checks made inside the ranks of 2-process MPI jobs (the program PipeSharp.Tests.MpiRanks), where only a rank can see
/// the outcome.
/// </summary>
[Collection(MpiCollection.Name)]
public class RankChecksTests
{
    private static readonly string Program = MpiJob.Built("tests", "PipeSharp.Tests.MpiRanks");

    /// <summary>
    /// Every message arrives with its shape, dtype and values, whatever the shapes (more than a channel's slots, a
    /// shorter batch, empty), dtypes (1 to 8 bytes), sizes (up to the receive-buffer pool) and layout (a
    /// non-contiguous view), in send order under one key, and matched by key when received in another order.
    /// </summary>
    [MpiFact]
    public void Every_message_arrives_whole_under_its_key_whatever_its_shape_dtype_size_or_layout()
    {
        RunCheck("transport", "38 messages checked");
    }

    /// <summary>
    /// Every key of a pipeline whose stages pass several values and skip stages (kind, consuming stage, sending stage,
    /// value, micro-batch) has its own MPI tag: each message arrives under its own key, with its requires_grad flag.
    /// </summary>
    [MpiFact]
    public void Every_key_of_a_pipeline_with_skips_and_several_values_has_its_own_tag_and_keeps_its_gradient_flag()
    {
        // 2 kinds x 2 consuming stages per rank x 6 senders x 3 values x 2 micro-batches.
        RunCheck("keys", "144 keyed messages checked");
    }

    /// <summary>
    /// A skip connection is one message from the process that makes it to the process that reads it (and its gradient
    /// one message back), not a relay through the processes of the stages in between: counted per destination and kind.
    /// </summary>
    [MpiFact]
    public void A_skip_goes_straight_from_the_process_that_makes_it_to_the_process_that_reads_it()
    {
        RunCheck("skips", "skips sent directly");
    }

    /// <summary>
    /// Each process builds the whole model, then keeps its own stages: the others' memory is freed when the pipeline
    /// is built, not left to the garbage collector, so a rank holds its share of the model, not all of it.
    /// </summary>
    [MpiFact]
    public void A_rank_frees_the_stages_it_does_not_train_when_the_pipeline_is_built()
    {
        RunCheck("memory", "holds its own stages only");
    }

    /// <summary>
    /// Under MPI, the bytes the transports send during an evaluation of a GPT on 2 ranks are the same at vocabularies
    /// 64 and 576, where Forward's grow by B x T x dV x 4 (it sends the logits to every process); Evaluate gives the
    /// loss of Forward, also with 2 replicas.
    /// </summary>
    [MpiFact]
    public void An_evaluation_sends_only_scalars_beyond_the_activations_whatever_the_vocabulary()
    {
        RunCheck("evaluation", "evaluation bytes do not grow with the vocabulary");
    }

    /// <summary>
    /// Over MPI, a GPT with dropout trained with full recomputation and with every block recomputed, under 1f1b and zb-v
    /// (split backward), ends with the parameters of training without recomputation (within 1e-6) on every stage: each
    /// process's generator is restored around a re-run, so dropout draws the same masks.
    /// </summary>
    [MpiFact]
    public void Recomputation_trains_as_without_it_across_processes_with_dropout()
    {
        RunCheck("recompute", "recomputation trains as without it");
    }

    /// <summary>
    /// Under MPI a rank is a process with a heap of its own: each rank's measured memory peak during training agrees
    /// with its own predicted peak (parameters, gradients, AdamW state, activations, received buffers) within 15%.
    /// </summary>
    [MpiFact]
    public void Each_rank_measures_a_memory_peak_within_15_percent_of_its_prediction()
    {
        RunCheck("budget", "measured peak agrees with its prediction");
    }

    // Runs the check on 2 processes; each must exit 0 and print what it checked.
    private static void RunCheck(string check, string said)
    {
        var run = MpiJob.Run(2, check, TimeSpan.FromMinutes(2), program: Program);
        Assert.True(run.ExitCode == 0, run.Output);
        Assert.Contains($"rank 0: {said}", run.Output);
        Assert.Contains($"rank 1: {said}", run.Output);
    }
}
