// Public value types of dam's C# bindings: statuses, images, regions, options.
using System;
using System.Collections.Generic;
using System.Runtime.InteropServices;
using System.Text;

namespace Dam
{
    /// <summary>dam_status: 0 or a negative error.</summary>
    public enum Status
    {
        Ok = 0, InvalidArgument = -1, InvalidRegion = -2, UnsupportedRegion = -3, InvalidModel = -4, Io = -5,
        ContextOverflow = -6, Cancelled = -7, Backend = -8, VersionMismatch = -9, BufferTooSmall = -10, Internal = -11,
    }

    public enum PixelFormat { Rgb8 = 0, Rgba8 = 1, Bgra8 = 2, Gray8 = 3 }

    public enum LoadStage { Start = 0, VisionLoaded = 1, LlmLoaded = 2, Done = 3 }

    public enum Length { None = 0, Words = 1, AboutWords = 2, MoreThanWords = 3, Sentences = 4 }

    /// <summary>A failed dam call: <see cref="Status"/> and dam's message.</summary>
    public class DamException : Exception
    {
        public Status Status { get; private set; }

        public DamException(Status status, string message) : base(message) { Status = status; }

        /// <summary>The exception for a failed call on this thread (dam_last_error).</summary>
        internal static DamException Last(int status)
        {
            return new DamException((Status)status, Utf8.FromC(Native.dam_last_error()));
        }

        internal static void Check(int status)
        {
            if (status != 0) throw Last(status);
        }
    }

    internal static class Utf8
    {
        /// <summary>A NUL-terminated UTF-8 copy of s (dam reads C strings).</summary>
        internal static byte[] ToC(string s)
        {
            if (s.IndexOf('\0') >= 0) throw new DamException(Status.InvalidArgument, "a string contains NUL");
            var b = new byte[Encoding.UTF8.GetByteCount(s) + 1];
            Encoding.UTF8.GetBytes(s, 0, s.Length, b, 0);
            return b;
        }

        internal static string FromC(IntPtr p)
        {
            if (p == IntPtr.Zero) return "";
            int n = 0;
            while (Marshal.ReadByte(p, n) != 0) n++;
            return From(p, n);
        }

        internal static string From(IntPtr p, int n)
        {
            var b = new byte[n];
            Marshal.Copy(p, b, 0, n);
            return Encoding.UTF8.GetString(b);
        }
    }

    /// <summary>
    /// Pixels dam reads during a call: a managed array (byte[], Unity's Color32[], int[] ...)
    /// pinned for the call, or native memory the caller keeps valid. Sizes are checked before dam
    /// sees the pointer. Unity's Texture2D.GetPixels32 rows run bottom-up: flip them (or the mask).
    /// </summary>
    public sealed class Image
    {
        readonly Array array;   // pinned during a call, or null
        readonly IntPtr pointer; // used when array is null
        readonly long byteLength;
        public int Width { get; private set; }
        public int Height { get; private set; }
        public int StrideBytes { get; private set; }
        public PixelFormat Format { get; private set; }

        Image(Array array, IntPtr pointer, long byteLength, int width, int height, int? strideBytes, PixelFormat format)
        {
            this.array = array;
            this.pointer = pointer;
            this.byteLength = byteLength;
            Width = width;
            Height = height;
            Format = format;
            StrideBytes = strideBytes ?? width * BytesPerPixel(format);
        }

        public static int BytesPerPixel(PixelFormat f)
        {
            return f == PixelFormat.Rgb8 ? 3 : f == PixelFormat.Gray8 ? 1 : 4;
        }

        /// <summary>Bytes in <paramref name="format"/>; no stride = tightly packed rows.</summary>
        public static Image FromBytes(byte[] data, int width, int height, PixelFormat format, int? strideBytes = null)
        {
            return FromPixels(data, width, height, format, strideBytes);
        }

        /// <summary>An array of blittable pixels, e.g. Unity's Color32[] (Rgba8).</summary>
        public static Image FromPixels<T>(T[] pixels, int width, int height, PixelFormat format = PixelFormat.Rgba8,
            int? strideBytes = null) where T : struct
        {
            if (pixels == null) throw new ArgumentNullException("pixels");
            return new Image(pixels, IntPtr.Zero, (long)pixels.Length * Marshal.SizeOf(typeof(T)), width, height,
                strideBytes, format);
        }

        /// <summary>Native memory of <paramref name="byteLength"/> bytes, valid during the call.</summary>
        public static Image FromPointer(IntPtr data, long byteLength, int width, int height, PixelFormat format,
            int? strideBytes = null)
        {
            return new Image(null, data, data == IntPtr.Zero ? 0 : byteLength, width, height, strideBytes, format);
        }

        /// <summary>The view dam reads; pins the array into <paramref name="pins"/>.</summary>
        internal Native.dam_image_view View(Pins pins, string what)
        {
            int bpp = BytesPerPixel(Format);
            if (Width <= 0 || Height <= 0 || StrideBytes < 0 || !Enum.IsDefined(typeof(PixelFormat), Format))
                throw new DamException(Status.InvalidArgument, string.Format(
                    "{0}: size/stride/format out of range ({1} x {2}, stride {3}, {4})", what, Width, Height,
                    StrideBytes, Format));
            long need = (long)StrideBytes * (Height - 1) + (long)Width * bpp;
            if (byteLength < need)
                throw new DamException(Status.InvalidArgument, string.Format(
                    "{0}: {1} x {2} pixels with stride {3} need {4} bytes, the buffer has {5}", what, Width,
                    Height, StrideBytes, need, byteLength));
            var v = new Native.dam_image_view();
            v.data = array != null ? pins.Pin(array) : pointer;
            v.width = (uint)Width;
            v.height = (uint)Height;
            v.stride_bytes = (UIntPtr)(ulong)StrideBytes;
            v.format = (int)Format;
            return v;
        }
    }

    /// <summary>Pinned arrays of one call, released by Dispose.</summary>
    internal sealed class Pins : IDisposable
    {
        readonly List<GCHandle> handles = new List<GCHandle>();

        internal IntPtr Pin(object o)
        {
            var h = GCHandle.Alloc(o, GCHandleType.Pinned);
            handles.Add(h);
            return h.AddrOfPinnedObject();
        }

        public void Dispose()
        {
            foreach (var h in handles) h.Free();
            handles.Clear();
        }
    }

    /// <summary>Which part of the image to describe.</summary>
    public abstract class Region
    {
        internal abstract void Fill(ref Native.dam_region r, Pins pins);

        internal Native.dam_region ToNative(Pins pins)
        {
            var r = new Native.dam_region();
            r.struct_size = (uint)Marshal.SizeOf(typeof(Native.dam_region));
            Fill(ref r, pins);
            return r;
        }

        internal static void SetPoints(ref Native.dam_region r, float[] xy, int[] labels, Pins pins)
        {
            if (xy == null || xy.Length % 2 != 0 || (labels != null && labels.Length != xy.Length / 2))
                throw new DamException(Status.InvalidArgument, "points must be x, y pairs, with one label per point");
            r.points = xy.Length > 0 ? pins.Pin(xy) : IntPtr.Zero;
            r.n_points = (UIntPtr)(uint)(xy.Length / 2);
            r.point_labels = labels != null && labels.Length > 0 ? pins.Pin(labels) : IntPtr.Zero;
        }
    }

    /// <summary>A mask of the image's size: a pixel is in the region when any channel is > 0.</summary>
    public sealed class MaskRegion : Region
    {
        public Image Mask { get; private set; }
        public MaskRegion(Image mask) { Mask = mask; }
        internal override void Fill(ref Native.dam_region r, Pins pins)
        {
            if (Mask == null) throw new DamException(Status.InvalidArgument, "mask: null");
            r.kind = 0;
            r.mask = Mask.View(pins, "mask");
        }
    }

    /// <summary>The image's own alpha channel (alpha > 0).</summary>
    public sealed class AlphaRegion : Region
    {
        internal override void Fill(ref Native.dam_region r, Pins pins) { r.kind = 1; }
    }

    /// <summary>Pixels whose centre lies in [x0, x1) x [y0, y1); fractions with normalized.</summary>
    public sealed class BoxRegion : Region
    {
        public float X0, Y0, X1, Y1;
        public bool Normalized;
        public BoxRegion(float x0, float y0, float x1, float y1, bool normalized = false)
        {
            X0 = x0; Y0 = y0; X1 = x1; Y1 = y1; Normalized = normalized;
        }
        internal override void Fill(ref Native.dam_region r, Pins pins)
        {
            r.kind = 2;
            r.normalized = Normalized ? 1 : 0;
            r.x0 = X0; r.y0 = Y0; r.x1 = X1; r.y1 = Y1;
        }
    }

    /// <summary>The polyline through x, y pairs drawn with a round brush.</summary>
    public sealed class ScribbleRegion : Region
    {
        public float[] Points;
        public float BrushWidth;
        public bool Normalized;
        public ScribbleRegion(float[] xy, float brushWidth, bool normalized = false)
        {
            Points = xy; BrushWidth = brushWidth; Normalized = normalized;
        }
        internal override void Fill(ref Native.dam_region r, Pins pins)
        {
            r.kind = 3;
            r.normalized = Normalized ? 1 : 0;
            r.brush_width = BrushWidth;
            SetPoints(ref r, Points, null, pins);
        }
    }

    /// <summary>Clicks: needs a segmenter dam lacks; always Status.UnsupportedRegion.</summary>
    public sealed class PointsRegion : Region
    {
        public float[] Points;
        public int[] Labels;
        public PointsRegion(float[] xy, int[] labels = null) { Points = xy; Labels = labels; }
        internal override void Fill(ref Native.dam_region r, Pins pins)
        {
            r.kind = 4;
            SetPoints(ref r, Points, Labels, pins);
        }
    }

    /// <summary>What to generate; null fields keep dam_describe_options_default's values.</summary>
    public sealed class DescribeOptions
    {
        public int? MaxNewTokens;
        public string Query;
        public Length Length = Length.None;
        public int? LengthValue;
        public float? Temperature;
        public float? TopP;
        public int? TopK;
        public uint? Seed;

        /// <summary>Greedy (temperature 0): deterministic captions.</summary>
        public static DescribeOptions Greedy(int? maxNewTokens = null)
        {
            return new DescribeOptions { MaxNewTokens = maxNewTokens, Temperature = 0f };
        }

        internal Native.dam_describe_options ToNative(Pins pins)
        {
            var o = Native.dam_describe_options_default();
            if (MaxNewTokens.HasValue)
            {
                if (MaxNewTokens.Value < 0) throw new DamException(Status.InvalidArgument, "MaxNewTokens < 0");
                o.max_new_tokens = (uint)MaxNewTokens.Value;
            }
            if (Query != null) o.query = pins.Pin(Utf8.ToC(Query));
            o.length_kind = (int)Length;
            if (LengthValue.HasValue) o.length_value = (uint)LengthValue.Value;
            if (Temperature.HasValue) o.temperature = Temperature.Value;
            if (TopP.HasValue) o.top_p = TopP.Value;
            if (TopK.HasValue) o.top_k = TopK.Value;
            if (Seed.HasValue) o.seed = Seed.Value;
            return o;
        }
    }

    /// <summary>How to load a model; null fields keep dam_model_default_params's values.</summary>
    public sealed class ModelParams
    {
        public int? Threads;
        public uint? ContextLength;
        public bool? KvF32;
        public bool? FlashAttention;
        public int? GpuLayers;
        public uint? ParallelRegions;
        public int? MainGpu;
        public bool? VisionOnCpu;
        public bool? Repack;
    }

    /// <summary>Timings of a session's last successful describe call.</summary>
    public struct Timings
    {
        public uint PromptTokens, GeneratedTokens;
        public double PreprocessMs, VisionMs, PrefillMs, DecodeMs;
    }
}
