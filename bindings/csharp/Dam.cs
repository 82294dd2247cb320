// dam's C# bindings: Model and Session over the P/Invoke layer (Native.cs).
// Callbacks are static methods marked [MonoPInvokeCallback] (IL2CPP compiles only those into
// native callbacks) that find the call's state through a GCHandle passed as user_data; an
// exception a callback throws is caught there (never unwound through dam), cancels the call,
// and is rethrown by the describe call.
using System;
using System.Collections.Generic;
using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;

#if !ENABLE_IL2CPP && !UNITY_5_3_OR_NEWER
namespace AOT
{
    /// <summary>Unity's marker for static methods called from native code (IL2CPP); a no-op here.</summary>
    [AttributeUsage(AttributeTargets.Method)]
    public sealed class MonoPInvokeCallbackAttribute : Attribute
    {
        public MonoPInvokeCallbackAttribute(Type type) { }
    }
}
#endif

namespace Dam
{
    /// <summary>Library facts.</summary>
    public static class Library
    {
        public static string Version { get { return Utf8.FromC(Native.dam_version()); } }
        public static uint ApiVersion { get { return Native.dam_api_version(); } }
        public static string StatusName(Status s) { return Utf8.FromC(Native.dam_status_string((int)s)); }
        /// <summary>JSON describing the build and the machine.</summary>
        public static string BackendInfo { get { return Utf8.FromC(Native.dam_backend_info()); } }

        static bool checkedLayout;

        /// <summary>
        /// Refuses a library of another major API version, older than these bindings, or whose
        /// structs have other sizes than the ones declared here (Status.VersionMismatch).
        /// </summary>
        internal static void CheckAbi()
        {
            if (checkedLayout) return;
            uint v = Native.dam_api_version();
            if (v >> 16 != Native.ApiVersionMajor || v < Native.ApiVersion)
                throw new DamException(Status.VersionMismatch, string.Format(
                    "libdam implements API {0}.{1}, these bindings need {2}.{3}", v >> 16, v & 0xffff,
                    Native.ApiVersionMajor, Native.ApiVersionMinor));
            Expect("dam_model_params", Native.dam_model_default_params().struct_size, typeof(Native.dam_model_params));
            Expect("dam_session_params", Native.dam_session_default_params().struct_size, typeof(Native.dam_session_params));
            Expect("dam_describe_options", Native.dam_describe_options_default().struct_size,
                typeof(Native.dam_describe_options));
            checkedLayout = true;
        }

        static void Expect(string name, uint cSize, Type t)
        {
            int size = Marshal.SizeOf(t);
            if (cSize != size)
                throw new DamException(Status.VersionMismatch, string.Format(
                    "{0} is {1} bytes in libdam, {2} in these bindings", name, cSize, size));
        }
    }

    /// <summary>
    /// A loaded model (both GGUF files, memory-mapped, immutable): share it across threads and
    /// give each thread its own Session. Sessions may outlive it.
    /// </summary>
    public sealed class Model : IDisposable
    {
        readonly ModelHandle handle;

        Model(ModelHandle h) { handle = h; }

        /// <summary>Loads *-llm-*.gguf and *-vision-*.gguf; progress returning false cancels.</summary>
        public static Model Load(string llm, string vision, ModelParams p = null, Func<LoadStage, float, bool> progress = null)
        {
            Library.CheckAbi();
            p = p ?? new ModelParams();
            var mp = Native.dam_model_default_params();
            if (p.Threads.HasValue) mp.n_threads = p.Threads.Value;
            if (p.ContextLength.HasValue) mp.n_ctx = p.ContextLength.Value;
            if (p.KvF32.HasValue) mp.kv_type = p.KvF32.Value ? 1 : 0;
            if (p.FlashAttention.HasValue) mp.flash_attn = p.FlashAttention.Value ? 1 : 2;
            if (p.GpuLayers.HasValue) mp.n_gpu_layers = p.GpuLayers.Value;
            if (p.ParallelRegions.HasValue) mp.n_seq_max = p.ParallelRegions.Value;
            var dp = new Native.dam_device_params();
            DamException.Check(Native.dam_device_params_init(ref dp, (UIntPtr)(uint)Marshal.SizeOf(typeof(Native.dam_device_params))));
            if (p.MainGpu.HasValue) dp.main_gpu = p.MainGpu.Value;
            if (p.VisionOnCpu.HasValue) dp.vision_device = p.VisionOnCpu.Value ? 1 : 0;
            if (p.Repack.HasValue) dp.repack = p.Repack.Value ? 1 : 0;
            var state = new CallState(null, progress, null);
            var gc = GCHandle.Alloc(state);
            try
            {
                if (progress != null)
                {
                    mp.progress_callback = Marshal.GetFunctionPointerForDelegate(Callbacks.Progress);
                    mp.progress_user_data = GCHandle.ToIntPtr(gc);
                }
                ModelHandle h;
                int st = Native.dam_model_load_on(Native.ApiVersion, Utf8.ToC(llm), Utf8.ToC(vision), ref mp, ref dp, out h);
                if (state.Error != null)
                {
                    h.Dispose();
                    state.Error.Throw();
                }
                DamException.Check(st);
                return new Model(h);
            }
            finally
            {
                gc.Free();
            }
        }

        /// <summary>The most frames Session.DescribeVideo takes.</summary>
        public int MaxFrames { get { return (int)Native.dam_model_max_frames(handle); } }

        /// <summary>A new session; threads 0 = the model's.</summary>
        public Session CreateSession(int threads = 0)
        {
            var sp = Native.dam_session_default_params();
            sp.n_threads = threads;
            SessionHandle s;
            DamException.Check(Native.dam_session_new(handle, ref sp, out s));
            return new Session(s);
        }

        /// <summary>One caption through a temporary session.</summary>
        public string Describe(Image image, Region region, DescribeOptions options = null, Func<string, bool> onToken = null)
        {
            using (var s = CreateSession()) return s.Describe(image, region, options, onToken);
        }

        public void Dispose() { handle.Dispose(); }
    }

    /// <summary>The state of one call with callbacks, found through user_data.</summary>
    internal sealed class CallState
    {
        internal readonly Func<int, string, bool> OnToken;
        internal readonly Func<LoadStage, float, bool> OnProgress;
        internal readonly SessionHandle Session;
        internal ExceptionDispatchInfo Error;

        internal CallState(Func<int, string, bool> onToken, Func<LoadStage, float, bool> onProgress, SessionHandle session)
        {
            OnToken = onToken;
            OnProgress = onProgress;
            Session = session;
        }

        /// <summary>Keeps the first exception and cancels the call; false for dam.</summary>
        internal bool Fail(Exception e)
        {
            if (Error == null) Error = ExceptionDispatchInfo.Capture(e);
            if (Session != null) Native.dam_session_cancel(Session);
            return false;
        }
    }

    /// <summary>The native callbacks: static, kept alive for the process.</summary>
    internal static class Callbacks
    {
        internal static readonly Native.TokenCallback Token = OnToken;
        internal static readonly Native.BatchTokenCallback BatchToken = OnBatchToken;
        internal static readonly Native.ProgressCallback Progress = OnProgress;

        static CallState State(IntPtr user) { return (CallState)GCHandle.FromIntPtr(user).Target; }

        [AOT.MonoPInvokeCallback(typeof(Native.TokenCallback))]
        static bool OnToken(IntPtr piece, UIntPtr len, IntPtr user)
        {
            return OnBatchToken(UIntPtr.Zero, piece, len, user);
        }

        [AOT.MonoPInvokeCallback(typeof(Native.BatchTokenCallback))]
        static bool OnBatchToken(UIntPtr region, IntPtr piece, UIntPtr len, IntPtr user)
        {
            var s = State(user);
            if (s.Error != null) return false;
            try
            {
                return s.OnToken((int)(uint)region, Utf8.From(piece, (int)(uint)len));
            }
            catch (Exception e)
            {
                return s.Fail(e);
            }
        }

        [AOT.MonoPInvokeCallback(typeof(Native.ProgressCallback))]
        static bool OnProgress(int stage, float progress, IntPtr user)
        {
            var s = State(user);
            if (s.Error != null) return false;
            try
            {
                return s.OnProgress((LoadStage)stage, progress);
            }
            catch (Exception e)
            {
                return s.Fail(e);
            }
        }
    }
}
