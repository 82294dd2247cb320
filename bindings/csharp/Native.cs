// The P/Invoke layer of dam's C# bindings: include/dam.h's structs and functions, one to one.
// Only what Unity's Mono and IL2CPP support: blittable structs, IntPtr for pointers, cdecl
// delegates used as static callbacks (see Dam.cs).
using System;
using System.Runtime.InteropServices;

namespace Dam
{
    internal static class Native
    {
#if (UNITY_IOS || UNITY_WEBGL) && !UNITY_EDITOR
        const string Lib = "__Internal"; // statically linked into the player
#else
        const string Lib = "dam"; // libdam.so, libdam.dylib, dam.dll
#endif

        internal const uint ApiVersionMajor = 1;
        internal const uint ApiVersionMinor = 2;
        internal const uint ApiVersion = (ApiVersionMajor << 16) | ApiVersionMinor;

        // ---------------------------------------------------------------- structs
        // Field names are the C names: the layout test compares each offset with the header's.

        [StructLayout(LayoutKind.Sequential)]
        internal struct dam_model_params
        {
            public uint struct_size;
            public int n_threads;
            public uint n_ctx;
            public int kv_type;
            public int flash_attn;
            public int n_gpu_layers;
            public IntPtr progress_callback;
            public IntPtr progress_user_data;
            public IntPtr log_callback;
            public IntPtr log_user_data;
            public int log_level;
            public uint n_seq_max;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct dam_session_params
        {
            public uint struct_size;
            public int n_threads;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct dam_describe_options
        {
            public uint struct_size;
            public uint max_new_tokens;
            public IntPtr query; // UTF-8, NUL-terminated
            public int length_kind;
            public uint length_value;
            public float temperature;
            public float top_p;
            public int top_k;
            public uint seed;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct dam_device_params
        {
            public uint struct_size;
            public int main_gpu;
            public int vision_device;
            public int repack;
            public IntPtr segmenter_path; // API 1.4 (NULL: no segmenter; not set by these bindings yet)
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct dam_image_view
        {
            public IntPtr data;
            public uint width;
            public uint height;
            public UIntPtr stride_bytes;
            public int format;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct dam_point
        {
            public float x;
            public float y;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct dam_region
        {
            public uint struct_size;
            public int kind;
            public int normalized;
            public float brush_width;
            public float x0;
            public float y0;
            public float x1;
            public float y1;
            public dam_image_view mask;
            public IntPtr points;
            public UIntPtr n_points;
            public IntPtr point_labels;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct dam_timings
        {
            public uint struct_size;
            public uint n_prompt_tokens;
            public uint n_generated_tokens;
            public double preprocess_ms;
            public double vision_ms;
            public double prefill_ms;
            public double decode_ms;
        }

        // ---------------------------------------------------------------- callbacks

        [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
        [return: MarshalAs(UnmanagedType.I1)]
        internal delegate bool TokenCallback(IntPtr piece, UIntPtr len, IntPtr userData);

        [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
        [return: MarshalAs(UnmanagedType.I1)]
        internal delegate bool BatchTokenCallback(UIntPtr region, IntPtr piece, UIntPtr len, IntPtr userData);

        [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
        [return: MarshalAs(UnmanagedType.I1)]
        internal delegate bool ProgressCallback(int stage, float progress, IntPtr userData);

        // ---------------------------------------------------------------- functions

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern IntPtr dam_version();

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint dam_api_version();

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern IntPtr dam_status_string(int status);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern IntPtr dam_last_error();

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern IntPtr dam_backend_info();

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern dam_model_params dam_model_default_params();

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern dam_session_params dam_session_default_params();

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern dam_describe_options dam_describe_options_default();

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int dam_device_params_init(ref dam_device_params p, UIntPtr size);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int dam_model_load_on(uint apiVersion, byte[] llmPath, byte[] visionPath,
            ref dam_model_params p, ref dam_device_params d, out ModelHandle model);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern void dam_model_free(IntPtr model);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint dam_model_max_frames(ModelHandle model);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int dam_session_new(ModelHandle model, ref dam_session_params p, out SessionHandle session);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern void dam_session_free(IntPtr session);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int dam_session_cancel(SessionHandle session);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int dam_describe(SessionHandle session, ref dam_image_view image, ref dam_region region,
            ref dam_describe_options options, TokenCallback onToken, IntPtr userData, IntPtr output, UIntPtr outCap,
            out UIntPtr outLen);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int dam_describe_video(SessionHandle session, [In] dam_image_view[] images,
            [In] dam_region[] regions, UIntPtr nFrames, ref dam_describe_options options, TokenCallback onToken,
            IntPtr userData, IntPtr output, UIntPtr outCap, out UIntPtr outLen);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int dam_describe_batch(SessionHandle session, ref dam_image_view image,
            [In] dam_region[] regions, UIntPtr nRegions, ref dam_describe_options options, BatchTokenCallback onToken,
            IntPtr userData);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern UIntPtr dam_session_caption_count(SessionHandle session);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int dam_session_caption(SessionHandle session, UIntPtr index, byte[] output,
            UIntPtr outCap, out UIntPtr outLen);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int dam_session_timings(SessionHandle session, ref dam_timings output);
    }

    /// <summary>A dam_model*, freed by dam_model_free when released.</summary>
    internal sealed class ModelHandle : SafeHandle
    {
        public ModelHandle() : base(IntPtr.Zero, true) { }
        public override bool IsInvalid { get { return handle == IntPtr.Zero; } }
        protected override bool ReleaseHandle() { Native.dam_model_free(handle); return true; }
    }

    /// <summary>A dam_session*, freed by dam_session_free when released (after calls in flight).</summary>
    internal sealed class SessionHandle : SafeHandle
    {
        public SessionHandle() : base(IntPtr.Zero, true) { }
        public override bool IsInvalid { get { return handle == IntPtr.Zero; } }
        protected override bool ReleaseHandle() { Native.dam_session_free(handle); return true; }
    }
}
