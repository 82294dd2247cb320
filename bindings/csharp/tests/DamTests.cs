// The C# bindings on the tiny test model: captions equal the CLI's, every region kind,
// streaming, cancel, errors, threads, struct layouts, bad input. A plain program (no NUnit):
// one line per test, then "N passed, M failed". tests/bindings.rs builds and runs it with
// DAM_TEST_LLM, DAM_TEST_VISION, DAM_CLI, DAM_TEST_CASES (PNGs, for the CLI), DAM_TEST_PNM
// (the same images as PPM/PGM) and DAM_LAYOUT (the output of layout.c) set.
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Linq;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Text;
using System.Threading;
using Dam;

static class DamTests
{
    const int N = 24; // tokens per caption
    static int passed, failed;

    static string Env(string name)
    {
        var v = Environment.GetEnvironmentVariable(name);
        if (string.IsNullOrEmpty(v)) throw new Exception(name + " is not set");
        return v;
    }

    static readonly string Llm = Env("DAM_TEST_LLM"), Vision = Env("DAM_TEST_VISION");
    static readonly string Cases = Env("DAM_TEST_CASES"), Pnm = Env("DAM_TEST_PNM");
    static readonly DescribeOptions Greedy = DescribeOptions.Greedy(N);

    /// <summary>A binary PPM (P6, RGB8) or PGM (P5, GRAY8) file with maxval 255.</summary>
    sealed class Picture
    {
        public int W, H, Channels;
        public byte[] Bytes;
        public Image Image() { return Dam.Image.FromBytes(Bytes, W, H, Channels == 3 ? PixelFormat.Rgb8 : PixelFormat.Gray8); }
    }

    static Picture Read(string name)
    {
        var b = File.ReadAllBytes(Path.Combine(Pnm, name));
        int pos = 0;
        Func<string> token = () =>
        {
            while (char.IsWhiteSpace((char)b[pos])) pos++;
            int start = pos;
            while (!char.IsWhiteSpace((char)b[pos])) pos++;
            return Encoding.ASCII.GetString(b, start, pos - start);
        };
        string magic = token();
        var p = new Picture { W = int.Parse(token()), H = int.Parse(token()), Channels = magic == "P6" ? 3 : 1 };
        token(); // maxval
        pos++;
        p.Bytes = new byte[p.W * p.H * p.Channels];
        Array.Copy(b, pos, p.Bytes, 0, p.Bytes.Length);
        return p;
    }

    static string Cli(params string[] args)
    {
        var all = new List<string> { "describe", "--llm", Llm, "--vision", Vision, "--threads", "1", "--greedy",
            "--max-tokens", N.ToString() };
        all.AddRange(args);
        var psi = new ProcessStartInfo(Env("DAM_CLI"), string.Join(" ", all.Select(a => "\"" + a + "\"")))
        {
            UseShellExecute = false, RedirectStandardOutput = true, StandardOutputEncoding = Encoding.UTF8,
        };
        using (var p = Process.Start(psi))
        {
            string output = p.StandardOutput.ReadToEnd();
            p.WaitForExit();
            Check(p.ExitCode == 0 && output.EndsWith("\n"), "CLI failed: " + output);
            return output.Substring(0, output.Length - 1);
        }
    }

    static void Check(bool ok, string what) { if (!ok) throw new Exception("check failed: " + what); }

    static void Eq<T>(T got, T want)
    {
        if (!EqualityComparer<T>.Default.Equals(got, want)) throw new Exception("got <" + got + ">, want <" + want + ">");
    }

    static T Throws<T>(Action body) where T : Exception
    {
        try { body(); }
        catch (T e) { return e; }
        catch (Exception e) { throw new Exception("want " + typeof(T).Name + ", got " + e, e); }
        throw new Exception("want " + typeof(T).Name + ", nothing thrown");
    }

    static Status Fails(Action body) { return Throws<DamException>(body).Status; }

    static void Test(string name, Action body)
    {
        try
        {
            body();
            passed++;
            Console.WriteLine("ok   " + name);
        }
        catch (Exception e)
        {
            failed++;
            Console.WriteLine("FAIL " + name + ": " + e);
        }
    }

    static int Main()
    {
        var c1 = Read("c1.ppm");
        var c1Mask = Read("c1_mask.pgm");
        var mask = new MaskRegion(c1Mask.Image());
        var model = Model.Load(Llm, Vision, new ModelParams { Threads = 1 });
        var session = model.CreateSession(1);
        string want = Cli("-i", Cases + "/c1_image.png", "--mask", Cases + "/c1_mask.png");
        Check(want.Length > 0, "a caption");
        string img = Cases + "/c1_image.png";
        int w = c1.W, h = c1.H;

        Test("library facts and struct layouts equal the C header's", () =>
        {
            Check(Library.Version.Length > 0, "version");
            Eq(Library.ApiVersion >> 16, 1u);
            Check(Library.BackendInfo.Contains("\"api_version\""), "backend info");
            Eq(Library.StatusName(Status.InvalidRegion), "DAM_STATUS_INVALID_REGION");
            Eq(model.MaxFrames, 8);
            var c = File.ReadAllLines(Env("DAM_LAYOUT")).Select(l => l.Split(' '))
                .ToDictionary(p => p[0], p => int.Parse(p[1]));
            var seen = new HashSet<string>();
            foreach (var t in typeof(Dam.Image).Assembly.GetTypes().Where(t => t.IsValueType && t.Name.StartsWith("dam_")))
            {
                Eq(t.Name + " " + Marshal.SizeOf(t), t.Name + " " + c[t.Name]);
                seen.Add(t.Name);
                foreach (var f in t.GetFields(BindingFlags.Public | BindingFlags.Instance))
                {
                    string key = t.Name + "." + f.Name;
                    Eq(key + " " + Marshal.OffsetOf(t, f.Name), key + " " + c[key]);
                    seen.Add(key);
                }
            }
            Eq(string.Join(",", c.Keys.Where(k => !seen.Contains(k))), "");
        });

        Test("mask region: bytes, Color32-like pixels, native memory, padded stride all equal the CLI", () =>
        {
            Eq(session.Describe(c1.Image(), mask, Greedy), want);
            var rgba = new byte[w * h * 4];
            for (int i = 0; i < w * h; i++)
            {
                rgba[4 * i] = c1.Bytes[3 * i]; rgba[4 * i + 1] = c1.Bytes[3 * i + 1];
                rgba[4 * i + 2] = c1.Bytes[3 * i + 2]; rgba[4 * i + 3] = 255;
            }
            var ints = new int[w * h]; // 4-byte structs, as Unity's Color32[]
            Buffer.BlockCopy(rgba, 0, ints, 0, rgba.Length);
            Eq(session.Describe(Image.FromPixels(ints, w, h), mask, Greedy), want);
            var mem = Marshal.AllocHGlobal(rgba.Length);
            try
            {
                Marshal.Copy(rgba, 0, mem, rgba.Length);
                Eq(session.Describe(Image.FromPointer(mem, rgba.Length, w, h, PixelFormat.Rgba8), mask, Greedy), want);
            }
            finally { Marshal.FreeHGlobal(mem); }
            int stride = w * 3 + 5;
            var padded = new byte[stride * h];
            for (int y = 0; y < h; y++) Array.Copy(c1.Bytes, y * w * 3, padded, y * stride, w * 3);
            Eq(session.Describe(Image.FromBytes(padded, w, h, PixelFormat.Rgb8, stride), mask, Greedy), want);
            Eq(model.Describe(c1.Image(), mask, Greedy), want);
        });

        Test("box, normalized box and scribble equal the CLI", () =>
        {
            Eq(session.Describe(c1.Image(), new BoxRegion(100, 200, 900, 800), Greedy), Cli("-i", img, "--box", "100,200,900,800"));
            Eq(session.Describe(c1.Image(), new BoxRegion(0.1f, 0.2f, 0.5f, 0.7f, true), Greedy),
                Cli("-i", img, "--box", "0.1,0.2,0.5,0.7", "--normalized"));
            Eq(session.Describe(c1.Image(), new ScribbleRegion(new float[] { 100, 100, 600, 500, 900, 300 }, 40), Greedy),
                Cli("-i", img, "--scribble", "100,100;600,500;900,300", "--brush", "40"));
        });

        Test("alpha region equals the mask", () =>
        {
            var rgba = new byte[w * h * 4];
            for (int i = 0; i < w * h; i++)
            {
                rgba[4 * i] = c1.Bytes[3 * i]; rgba[4 * i + 1] = c1.Bytes[3 * i + 1];
                rgba[4 * i + 2] = c1.Bytes[3 * i + 2]; rgba[4 * i + 3] = c1Mask.Bytes[i];
            }
            Eq(session.Describe(Image.FromBytes(rgba, w, h, PixelFormat.Rgba8), new AlphaRegion(), Greedy), want);
        });

        Test("video equals the CLI", () =>
        {
            var frames = Enumerable.Range(0, 3).Select(k => Read("v1_f" + k + ".ppm").Image()).ToList();
            var masks = Enumerable.Range(0, 3).Select(k => (Region)new MaskRegion(Read("v1_mask_f" + k + ".pgm").Image())).ToList();
            var args = Enumerable.Range(0, 3).SelectMany(k => new[] { "-i", Cases + "/v1_image_f" + k + ".png",
                "--mask", Cases + "/v1_mask_f" + k + ".png" }).ToArray();
            Eq(session.DescribeVideo(frames, masks, Greedy), Cli(args));
        });

        Test("batch equals single calls; pieces per region", () =>
        {
            var regions = new List<Region> { mask, new BoxRegion(100, 200, 900, 800),
                new ScribbleRegion(new float[] { 100, 100, 600, 500 }, 40) };
            var single = regions.Select(r => session.Describe(c1.Image(), r, Greedy)).ToArray();
            var pieces = regions.Select(r => new StringBuilder()).ToArray();
            var got = session.DescribeBatch(c1.Image(), regions, Greedy, (k, p) => { pieces[k].Append(p); return true; });
            Eq(string.Join("|", got), string.Join("|", single));
            Eq(string.Join("|", pieces.Select(p => p.ToString())), string.Join("|", single));
            regions.Add(new BoxRegion(2, 2, 3, 3, true));
            Eq(Fails(() => session.DescribeBatch(c1.Image(), regions, Greedy)), Status.InvalidRegion);
            Eq(Fails(() => session.DescribeBatch(c1.Image(), new Region[0], Greedy)), Status.InvalidArgument);
        });

        Test("streaming: pieces join to the caption; false stops early", () =>
        {
            var pieces = new List<string>();
            Eq(session.Describe(c1.Image(), mask, Greedy, p => { pieces.Add(p); return true; }), want);
            Check(pieces.Count > 1, "several pieces");
            Eq(string.Concat(pieces), want);
            var first = session.Describe(c1.Image(), mask, Greedy, p => false);
            Check(want.StartsWith(first) && first.Length < want.Length, first);
        });

        Test("cancel before a call and from a second thread", () =>
        {
            session.Cancel();
            Eq(Fails(() => session.Describe(c1.Image(), mask, Greedy)), Status.Cancelled);
            Eq(session.Describe(c1.Image(), mask, Greedy), want);
            int calls = 0;
            Eq(Fails(() => session.Describe(c1.Image(), mask, Greedy, p =>
            {
                if (calls++ == 0) { var t = new Thread(session.Cancel); t.Start(); t.Join(); }
                return true;
            })), Status.Cancelled);
            Eq(calls, 1);
            Eq(session.Describe(c1.Image(), mask, Greedy), want);
        });

        Test("every error status", () =>
        {
            Eq(Fails(() => session.Describe(c1.Image(), mask, new DescribeOptions { TopP = 0 })), Status.InvalidArgument);
            var empty = new MaskRegion(Image.FromBytes(new byte[w * h], w, h, PixelFormat.Gray8));
            Eq(Fails(() => session.Describe(c1.Image(), empty, Greedy)), Status.InvalidRegion);
            var e = Throws<DamException>(() => session.Describe(c1.Image(), new PointsRegion(new float[] { 10, 10 }), Greedy));
            Eq(e.Status, Status.UnsupportedRegion);
            Check(e.Message.Contains("segmenter"), e.Message);
            Eq(Fails(() => Model.Load(Vision, Llm)), Status.InvalidModel);
            string tmp = Path.GetTempPath();
            Eq(Fails(() => Model.Load(tmp + "/none-llm.gguf", tmp + "/none-vision.gguf")), Status.Io);
            var longQuery = new DescribeOptions { MaxNewTokens = N, Temperature = 0, Query = string.Concat(Enumerable.Repeat("word ", 300)) };
            using (var small = Model.Load(Llm, Vision, new ModelParams { Threads = 1, ContextLength = 256 }))
            using (var s = small.CreateSession())
                Eq(Fails(() => s.Describe(c1.Image(), mask, longQuery)), Status.ContextOverflow);
            Eq(Fails(() => Model.Load(Llm, Vision, null, (st, f) => false)), Status.Cancelled);
            // Statuses no input here causes: their names, as dam_status_string gives them.
            foreach (Status s in Enum.GetValues(typeof(Status)))
            {
                string snake = string.Concat(s.ToString().Select((ch, i) => i > 0 && char.IsUpper(ch) ? "_" + ch : ch.ToString()));
                Eq(Library.StatusName(s), "DAM_STATUS_" + snake.ToUpperInvariant());
            }
            Eq(session.Describe(c1.Image(), mask, Greedy), want);
        });

        Test("4 threads, one model, a session each", () =>
        {
            var got = new string[4];
            var errors = new Exception[4];
            var ts = Enumerable.Range(0, 4).Select(i => new Thread(() =>
            {
                try { using (var s = model.CreateSession(1)) got[i] = s.Describe(c1.Image(), mask, Greedy); }
                catch (Exception x) { errors[i] = x; }
            })).ToList();
            ts.ForEach(t => t.Start());
            ts.ForEach(t => t.Join());
            Eq(string.Join("|", errors.Select(x => x == null ? "" : x.Message)), "|||");
            Eq(string.Join("|", got), string.Join("|", Enumerable.Repeat(want, 4)));
        });

        Test("bad sizes, strides, negative sizes, mask size", () =>
        {
            var shortBytes = new byte[c1.Bytes.Length - 1];
            Eq(Fails(() => session.Describe(Image.FromBytes(shortBytes, w, h, PixelFormat.Rgb8), mask, Greedy)), Status.InvalidArgument);
            Eq(Fails(() => session.Describe(Image.FromBytes(c1.Bytes, w, h, PixelFormat.Rgb8, w * 3 - 1), mask, Greedy)), Status.InvalidArgument);
            Eq(Fails(() => session.Describe(Image.FromBytes(c1.Bytes, w, h, PixelFormat.Rgb8, -2), mask, Greedy)), Status.InvalidArgument);
            Eq(Fails(() => session.Describe(Image.FromBytes(c1.Bytes, -w, h, PixelFormat.Rgb8), mask, Greedy)), Status.InvalidArgument);
            Eq(Fails(() => session.Describe(Image.FromBytes(c1.Bytes, w, 0, PixelFormat.Rgb8), mask, Greedy)), Status.InvalidArgument);
            Eq(Fails(() => session.Describe(Image.FromBytes(c1.Bytes, w, h, (PixelFormat)7), mask, Greedy)), Status.InvalidArgument);
            Eq(Fails(() => session.Describe(Image.FromPointer(IntPtr.Zero, 100, w, h, PixelFormat.Rgb8), mask, Greedy)), Status.InvalidArgument);
            var tiny = new MaskRegion(Image.FromBytes(Enumerable.Repeat((byte)1, 100).ToArray(), 10, 10, PixelFormat.Gray8));
            Eq(Fails(() => session.Describe(c1.Image(), tiny, Greedy)), Status.InvalidRegion);
            Eq(Fails(() => session.Describe(c1.Image(), new ScribbleRegion(new float[] { 1, 2, 3 }, 4), Greedy)), Status.InvalidArgument);
            Eq(Fails(() => session.Describe(c1.Image(), mask, new DescribeOptions { MaxNewTokens = -1 })), Status.InvalidArgument);
            Eq(Fails(() => session.Describe(c1.Image(), mask, new DescribeOptions { Query = "a\0b" })), Status.InvalidArgument);
            Eq(Fails(() => session.Describe(c1.Image(), new AlphaRegion(), Greedy)), Status.InvalidRegion);
            Eq(Fails(() => session.DescribeVideo(new[] { c1.Image() }, new Region[0], Greedy)), Status.InvalidArgument);
            Throws<ArgumentNullException>(() => session.Describe(c1.Image(), null, Greedy));
            Eq(session.Describe(c1.Image(), mask, Greedy), want);
        });

        Test("a throwing callback: its exception surfaces after the call", () =>
        {
            var boom = new InvalidOperationException("boom");
            Check(Throws<InvalidOperationException>(() => session.Describe(c1.Image(), mask, Greedy, p => { throw boom; })) == boom, "same");
            Check(Throws<InvalidOperationException>(() => session.DescribeBatch(c1.Image(), new[] { mask, mask }, Greedy,
                (k, p) => { throw boom; })) == boom, "same (batch)");
            Check(Throws<InvalidOperationException>(() => Model.Load(Llm, Vision, null, (s, f) => { throw boom; })) == boom, "same (load)");
            Eq(session.Describe(c1.Image(), mask, Greedy), want);
        });

        Test("progress stages and timings", () =>
        {
            var stages = new List<LoadStage>();
            Model.Load(Llm, Vision, new ModelParams { Threads = 1 }, (s, f) => { stages.Add(s); return true; }).Dispose();
            Eq(string.Join(",", stages), "Start,VisionLoaded,LlmLoaded,Done");
            session.Describe(c1.Image(), mask, Greedy);
            var t = session.Timings();
            Check(t.PromptTokens > 0 && t.GeneratedTokens > 0 && t.VisionMs > 0, "timings");
        });

        Test("disposed handles and use after Dispose", () =>
        {
            var m = Model.Load(Llm, Vision, new ModelParams { Threads = 1 });
            var s = m.CreateSession(1);
            m.Dispose();
            m.Dispose(); // twice is fine
            Throws<ObjectDisposedException>(() => m.CreateSession());
            Throws<ObjectDisposedException>(() => { var x = m.MaxFrames; });
            Eq(s.Describe(c1.Image(), mask, Greedy), want); // a session outlives its model
            // Dispose from another thread during a call cancels it; the session is freed after it returns.
            Eq(Fails(() => s.Describe(c1.Image(), mask, Greedy, p =>
            {
                var t = new Thread(s.Dispose);
                t.Start();
                t.Join();
                return true;
            })), Status.Cancelled);
            Throws<ObjectDisposedException>(() => s.Describe(c1.Image(), mask, Greedy));
            Throws<ObjectDisposedException>(() => s.Cancel());
            Throws<ObjectDisposedException>(() => s.Timings());
            s.Dispose();
        });

        session.Dispose();
        model.Dispose();
        Console.WriteLine(passed + " passed, " + failed + " failed");
        return failed == 0 && passed > 0 ? 0 : 1;
    }
}
