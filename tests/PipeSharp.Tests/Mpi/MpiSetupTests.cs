using System.Runtime.InteropServices;
using PipeSharp.Mpi;

namespace PipeSharp.Tests.Mpi;

/// <summary>Setting up MPI in a process where it cannot work gives a message that says what to do.</summary>
public class MpiSetupTests
{
    [Fact]
    public void Without_the_MPICH_library_initialising_fails_with_what_to_install()
    {
        // This test process never uses MPI otherwise (the MPI tests run mpirun in child processes): make the
        // library unloadable here, as on a machine without MPICH.
        NativeLibrary.SetDllImportResolver(typeof(MpiCluster).Assembly, (name, _, _) =>
            name == "libmpich.so.12" ? NativeLibrary.Load("/nonexistent/libmpich.so.12") : IntPtr.Zero);
        var e = Assert.Throws<MpiException>(() => MpiCluster.Initialize());
        Assert.Contains("libmpich.so.12", e.Message);
        Assert.Contains("apt-get install mpich", e.Message);
    }

    [Fact]
    public void A_non_positive_peer_timeout_is_refused()
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => MpiCluster.Initialize(TimeSpan.Zero));
        Assert.Equal("peerTimeout", e.ParamName);
    }
}
