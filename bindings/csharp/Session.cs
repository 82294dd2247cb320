// dam's C# bindings: a Session (one thread at a time; Cancel from any thread).
using System;
using System.Collections.Generic;
using System.Runtime.InteropServices;

namespace Dam
{
    /// <summary>
    /// One conversation state on a model. Dispose cancels a call in flight and frees the session
    /// once it has returned; a call after Dispose throws ObjectDisposedException.
    /// </summary>
    public sealed class Session : IDisposable
    {
        readonly SessionHandle handle;

        internal Session(SessionHandle h) { handle = h; }

        /// <summary>Describes region of image; onToken gets each piece, false stops early.</summary>
        public string Describe(Image image, Region region, DescribeOptions options = null, Func<string, bool> onToken = null)
        {
            if (region == null) throw new ArgumentNullException("region");
            return Run(Mode.Single, new[] { image }, new[] { region }, options, Single(onToken))[0];
        }

        /// <summary>One caption of the region followed through video frames (images[k] with regions[k]).</summary>
        public string DescribeVideo(IList<Image> images, IList<Region> regions, DescribeOptions options = null,
            Func<string, bool> onToken = null)
        {
            if (images == null || regions == null || images.Count != regions.Count)
                throw new DamException(Status.InvalidArgument, "one region per frame");
            return Run(Mode.Video, images, regions, options, Single(onToken))[0];
        }

        /// <summary>One caption per region (1 ..= 64); onToken gets (region index, piece).</summary>
        public string[] DescribeBatch(Image image, IList<Region> regions, DescribeOptions options = null,
            Func<int, string, bool> onToken = null)
        {
            if (regions == null) throw new ArgumentNullException("regions");
            return Run(Mode.Batch, new[] { image }, regions, options, onToken);
        }

        /// <summary>Cancels the running describe call, or the next one. Any thread.</summary>
        public void Cancel() { DamException.Check(Native.dam_session_cancel(handle)); }

        public Timings Timings()
        {
            var t = new Native.dam_timings();
            t.struct_size = (uint)Marshal.SizeOf(typeof(Native.dam_timings));
            DamException.Check(Native.dam_session_timings(handle, ref t));
            return new Timings
            {
                PromptTokens = t.n_prompt_tokens, GeneratedTokens = t.n_generated_tokens,
                PreprocessMs = t.preprocess_ms, VisionMs = t.vision_ms, PrefillMs = t.prefill_ms, DecodeMs = t.decode_ms,
            };
        }

        /// <summary>Cancels a call running on another thread, then frees the session once it returns.</summary>
        public void Dispose()
        {
            try { Native.dam_session_cancel(handle); }
            catch (ObjectDisposedException) { }
            handle.Dispose();
        }

        enum Mode { Single, Video, Batch }

        static Func<int, string, bool> Single(Func<string, bool> f)
        {
            if (f == null) return null;
            return (k, piece) => f(piece);
        }

        string[] Run(Mode mode, IList<Image> images, IList<Region> regions, DescribeOptions options,
            Func<int, string, bool> onToken)
        {
            if (regions.Count == 0) throw new DamException(Status.InvalidArgument, "no regions");
            using (var pins = new Pins())
            {
                var views = new Native.dam_image_view[images.Count];
                for (int i = 0; i < views.Length; i++)
                {
                    if (images[i] == null) throw new DamException(Status.InvalidArgument, "image: null");
                    views[i] = images[i].View(pins, "image");
                }
                var rs = new Native.dam_region[regions.Count];
                for (int i = 0; i < rs.Length; i++)
                {
                    if (regions[i] == null) throw new DamException(Status.InvalidArgument, "region: null");
                    rs[i] = regions[i].ToNative(pins);
                }
                var o = (options ?? new DescribeOptions()).ToNative(pins);
                var state = new CallState(onToken, null, handle);
                var gc = GCHandle.Alloc(state);
                try
                {
                    IntPtr user = GCHandle.ToIntPtr(gc);
                    var n = (UIntPtr)(uint)rs.Length;
                    UIntPtr len;
                    var token = onToken != null ? Callbacks.Token : null;
                    int st;
                    if (mode == Mode.Single)
                        st = Native.dam_describe(handle, ref views[0], ref rs[0], ref o, token, user, IntPtr.Zero, UIntPtr.Zero, out len);
                    else if (mode == Mode.Video)
                        st = Native.dam_describe_video(handle, views, rs, n, ref o, token, user, IntPtr.Zero, UIntPtr.Zero, out len);
                    else
                        st = Native.dam_describe_batch(handle, ref views[0], rs, n, ref o,
                            onToken != null ? Callbacks.BatchToken : null, user);
                    if (state.Error != null) state.Error.Throw();
                    // With no output buffer dam keeps the caption and says BUFFER_TOO_SMALL.
                    if (st != (int)Status.BufferTooSmall) DamException.Check(st);
                    return Captions();
                }
                finally
                {
                    gc.Free();
                }
            }
        }

        /// <summary>The captions of the last call, copied out of the session.</summary>
        string[] Captions()
        {
            var out_ = new string[(int)(uint)Native.dam_session_caption_count(handle)];
            for (int i = 0; i < out_.Length; i++)
            {
                UIntPtr len;
                var k = (UIntPtr)(uint)i;
                int st = Native.dam_session_caption(handle, k, null, UIntPtr.Zero, out len);
                if (st != (int)Status.BufferTooSmall) DamException.Check(st == 0 ? (int)Status.Internal : st);
                var buf = new byte[(int)(uint)len];
                DamException.Check(Native.dam_session_caption(handle, k, buf, len, out len));
                out_[i] = System.Text.Encoding.UTF8.GetString(buf, 0, buf.Length - 1);
            }
            return out_;
        }
    }
}
