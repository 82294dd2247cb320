package dev.dam

import java.io.File
import java.lang.reflect.Modifier
import java.nio.ByteBuffer
import java.util.concurrent.CountDownLatch
import javax.imageio.ImageIO
import kotlin.concurrent.thread
import kotlin.system.exitProcess

// The Kotlin bindings on the tiny test model: captions equal the CLI's, every region kind,
// streaming, cancel, errors, threads, JNI symbols, bad input. A plain program (no JUnit):
// prints one line per test and "N passed, M failed". tests/bindings.rs runs it with
// DAM_TEST_LLM, DAM_TEST_VISION, DAM_CLI, DAM_TEST_CASES and DAM_JNI_LIBRARY set.

const val N = 24 // tokens per caption

fun env(name: String): String = System.getenv(name) ?: error("$name is not set")

val llm = env("DAM_TEST_LLM")
val vision = env("DAM_TEST_VISION")
val cases = File(env("DAM_TEST_CASES"))
val greedy = DescribeOptions.greedy(N)

/** A PNG's exact samples (no colour conversion): RGB8 or GRAY8 bytes. */
class Png(val width: Int, val height: Int, val channels: Int, val bytes: ByteArray) {
    fun image() = DamImage.bytes(bytes, width, height, if (channels == 3) PixelFormat.RGB8 else PixelFormat.GRAY8)

    fun argb() = IntArray(width * height) { i ->
        val (r, g, b) = if (channels == 3) Triple(bytes[3 * i], bytes[3 * i + 1], bytes[3 * i + 2])
        else Triple(bytes[i], bytes[i], bytes[i])
        (0xff shl 24) or ((r.toInt() and 0xff) shl 16) or ((g.toInt() and 0xff) shl 8) or (b.toInt() and 0xff)
    }
}

fun png(name: String): Png {
    val img = ImageIO.read(File(cases, name))
    val r = img.raster
    val px = r.getPixels(0, 0, r.width, r.height, null as IntArray?)
    return Png(r.width, r.height, r.numBands, ByteArray(px.size) { px[it].toByte() })
}

val c1 = png("c1_image.png")
val c1Mask = png("c1_mask.png")
val mask = Region.Mask(c1Mask.image())

fun cli(vararg args: String): String {
    val cmd = listOf(env("DAM_CLI"), "describe", "--llm", llm, "--vision", vision, "--threads", "1",
        "--greedy", "--max-tokens", "$N") + args
    val p = ProcessBuilder(cmd).redirectError(ProcessBuilder.Redirect.INHERIT).start()
    val out = p.inputStream.readBytes().toString(Charsets.UTF_8)
    check(p.waitFor() == 0) { "$cmd failed" }
    check(out.endsWith("\n")) { out }
    return out.dropLast(1)
}

fun eq(got: Any?, want: Any?) = check(got == want) { "got <$got>, want <$want>" }

inline fun <reified T : Throwable> throws(body: () -> Unit): T {
    try {
        body()
    } catch (t: Throwable) {
        if (t is T) return t
        throw AssertionError("want ${T::class.java.simpleName}, got $t", t)
    }
    throw AssertionError("want ${T::class.java.simpleName}, nothing thrown")
}

var passed = 0
var failed = 0

fun test(name: String, body: () -> Unit) {
    try {
        body()
        passed++
        println("ok   $name")
    } catch (t: Throwable) {
        failed++
        println("FAIL $name: $t")
        t.printStackTrace(System.out)
    }
}

/** The JNI name of a static native method (JNI spec, "Resolving Native Method Names"). */
fun jniName(cls: Class<*>, method: String): String {
    fun mangle(s: String) = buildString {
        for (c in s) when {
            c == '.' || c == '/' -> append('_')
            c == '_' -> append("_1")
            c == ';' -> append("_2")
            c == '[' -> append("_3")
            c.toInt() < 128 && c.isLetterOrDigit() -> append(c)
            else -> append("_0%04x".format(c.toInt()))
        }
    }
    return "Java_${mangle(cls.name)}_${mangle(method)}"
}

fun main() {
    val model = DamModel.load(llm, vision, ModelParams(threads = 1))
    val session = model.session(1)
    val want = cli("-i", "$cases/c1_image.png", "--mask", "$cases/c1_mask.png")
    check(want.isNotEmpty())

    test("library facts") {
        check(Dam.version().isNotEmpty())
        eq(Dam.apiVersion() shr 16, Dam.headerApiVersion() shr 16)
        check(Dam.apiVersion() >= Dam.headerApiVersion())
        check(Dam.backendInfo().contains("\"api_version\""))
        eq(Dam.statusName(-2), "DAM_STATUS_INVALID_REGION")
        eq(model.maxFrames, 8)
    }

    test("mask region: ARGB ints, RGB bytes, direct RGBA buffer all equal the CLI") {
        eq(session.describe(c1.image(), mask, greedy), want)
        eq(session.describe(c1.argb(), c1.width, c1.height, mask, greedy), want)
        eq(session.describe(c1.bytes, c1.width, c1.height, PixelFormat.RGB8, mask, greedy), want)
        val argb = c1.argb()
        val buf = ByteBuffer.allocateDirect(argb.size * 4)
        for (p in argb) buf.put((p shr 16).toByte()).put((p shr 8).toByte()).put(p.toByte()).put(0xff.toByte())
        eq(session.describe(DamImage.buffer(buf, c1.width, c1.height), mask, greedy), want)
        // A mask as ARGB ints, and a padded stride.
        eq(session.describe(c1.image(), Region.Mask(DamImage.argb(c1Mask.argb(), c1.width, c1.height)), greedy), want)
        val stride = c1.width * 3 + 5
        val padded = ByteArray(stride * c1.height)
        for (y in 0 until c1.height) System.arraycopy(c1.bytes, y * c1.width * 3, padded, y * stride, c1.width * 3)
        eq(session.describe(DamImage.bytes(padded, c1.width, c1.height, PixelFormat.RGB8, stride), mask, greedy), want)
        // Model.describe through a temporary session.
        eq(model.describe(c1.image(), mask, greedy), want)
    }

    test("box, normalized box and scribble equal the CLI") {
        val img = "$cases/c1_image.png"
        eq(session.describe(c1.image(), Region.Box(100f, 200f, 900f, 800f), greedy), cli("-i", img, "--box", "100,200,900,800"))
        eq(session.describe(c1.image(), Region.Box(0.1f, 0.2f, 0.5f, 0.7f, true), greedy),
            cli("-i", img, "--box", "0.1,0.2,0.5,0.7", "--normalized"))
        eq(session.describe(c1.image(), Region.Scribble(floatArrayOf(100f, 100f, 600f, 500f, 900f, 300f), 40f), greedy),
            cli("-i", img, "--scribble", "100,100;600,500;900,300", "--brush", "40"))
    }

    test("alpha region equals the mask") {
        val rgba = ByteArray(c1.width * c1.height * 4) { i ->
            if (i % 4 == 3) c1Mask.bytes[i / 4] else c1.bytes[i / 4 * 3 + i % 4]
        }
        eq(session.describe(DamImage.bytes(rgba, c1.width, c1.height, PixelFormat.RGBA8), Region.Alpha, greedy), want)
    }

    test("video equals the CLI") {
        val frames = (0..2).map { png("v1_image_f$it.png").image() to Region.Mask(png("v1_mask_f$it.png").image()) }
        val args = (0..2).flatMap { listOf("-i", "$cases/v1_image_f$it.png", "--mask", "$cases/v1_mask_f$it.png") }
        eq(session.describeVideo(frames, greedy), cli(*args.toTypedArray()))
    }

    test("batch equals single calls; pieces per region") {
        val regions = listOf(mask, Region.Box(100f, 200f, 900f, 800f),
            Region.Scribble(floatArrayOf(100f, 100f, 600f, 500f), 40f))
        val single = regions.map { session.describe(c1.image(), it, greedy) }
        val pieces = Array(regions.size) { StringBuilder() }
        eq(session.describeBatch(c1.image(), regions, greedy) { k, p -> pieces[k].append(p); true }, single)
        eq(pieces.map { it.toString() }, single)
        throws<InvalidRegionException> { session.describeBatch(c1.image(), regions + Region.Box(2f, 2f, 3f, 3f, true), greedy) }
        throws<InvalidArgumentException> { session.describeBatch(c1.image(), emptyList(), greedy) }
    }

    test("streaming: pieces join to the caption; false stops early") {
        val pieces = mutableListOf<String>()
        eq(session.describe(c1.image(), mask, greedy) { pieces.add(it); true }, want)
        check(pieces.size > 1)
        eq(pieces.joinToString(""), want)
        val first = session.describe(c1.image(), mask, greedy) { false }
        check(want.startsWith(first) && first.length < want.length) { first }
    }

    test("cancel before a call and from a second thread") {
        session.cancel()
        throws<CancelledException> { session.describe(c1.image(), mask, greedy) }
        eq(session.describe(c1.image(), mask, greedy), want)
        var calls = 0
        throws<CancelledException> {
            session.describe(c1.image(), mask, greedy) {
                if (calls++ == 0) thread { session.cancel() }.join()
                true
            }
        }
        eq(calls, 1)
        eq(session.describe(c1.image(), mask, greedy), want)
    }

    test("every error status") {
        val tmp = File(System.getProperty("java.io.tmpdir"))
        throws<InvalidArgumentException> { session.describe(c1.image(), mask, greedy.copy(topP = 0f)) }
        throws<InvalidRegionException> { session.describe(c1.image(), Region.Mask(DamImage.bytes(ByteArray(c1.width * c1.height), c1.width, c1.height, PixelFormat.GRAY8)), greedy) }
        val e = throws<UnsupportedRegionException> { session.describe(c1.image(), Region.Points(floatArrayOf(10f, 10f)), greedy) }
        eq(e.status, -3)
        val msg = e.message ?: ""
        check(msg.contains("segmenter")) { msg }
        throws<InvalidModelException> { DamModel.load(vision, llm) }
        throws<DamIoException> { DamModel.load("$tmp/none-llm.gguf", "$tmp/none-vision.gguf") }
        DamModel.load(llm, vision, ModelParams(threads = 1, contextLength = 256)).use { small ->
            val long = greedy.copy(query = "word ".repeat(300))
            small.session().use { s -> throws<ContextOverflowException> { s.describe(c1.image(), mask, long) } }
        }
        throws<CancelledException> { DamModel.load(llm, vision, progress = { _, _ -> false }) }
        // Statuses no input here can cause (BACKEND, VERSION_MISMATCH, BUFFER_TOO_SMALL,
        // INTERNAL): each maps to its class with the C library's name.
        val classes = listOf(InvalidArgumentException::class, InvalidRegionException::class,
            UnsupportedRegionException::class, InvalidModelException::class, DamIoException::class,
            ContextOverflowException::class, CancelledException::class, BackendException::class,
            VersionMismatchException::class, BufferTooSmallException::class, InternalException::class)
        val names = listOf("INVALID_ARGUMENT", "INVALID_REGION", "UNSUPPORTED_REGION", "INVALID_MODEL", "IO",
            "CONTEXT_OVERFLOW", "CANCELLED", "BACKEND", "VERSION_MISMATCH", "BUFFER_TOO_SMALL", "INTERNAL")
        for ((i, cls) in classes.withIndex()) {
            val s = -1 - i
            val x = DamException.of(s, "m".toByteArray())
            eq(x::class, cls)
            eq(x.status, s)
            eq(Dam.statusName(s), "DAM_STATUS_${names[i]}")
        }
        eq(DamException.of(-99, "m")::class, DamException::class)
        eq(session.describe(c1.image(), mask, greedy), want) // still usable
    }

    test("4 threads, one model, a session each") {
        val got = arrayOfNulls<String>(4)
        val start = CountDownLatch(1)
        val ts = (0 until 4).map { i ->
            thread { start.await(); model.session(1).use { got[i] = it.describe(c1.image(), mask, greedy) } }
        }
        start.countDown()
        ts.forEach { it.join() }
        eq(got.toList(), List(4) { want })
    }

    test("every external fun has its JNI symbol, and no symbol is stale") {
        val cls = DamNative::class.java
        val natives = cls.declaredMethods.filter { Modifier.isNative(it.modifiers) }.map { it.name }
        eq(natives.toSet().size, natives.size) // overloads would need JNI's long names
        val wantSyms = natives.map { jniName(cls, it) }.toSortedSet()
        val nm = ProcessBuilder("nm", "-D", "--defined-only", env("DAM_JNI_LIBRARY")).start()
        val syms = nm.inputStream.readBytes().toString(Charsets.UTF_8).lines()
            .map { it.substringAfterLast(' ') }.filter { it.startsWith("Java_") }.toSortedSet()
        eq(nm.waitFor(), 0)
        check(natives.size >= 13) { natives.toString() }
        eq(syms, wantSyms)
    }

    test("bad sizes, strides, negative sizes, mask size, heap buffer") {
        val w = c1.width
        val h = c1.height
        throws<InvalidArgumentException> { session.describe(c1.bytes.copyOf(c1.bytes.size - 1), w, h, PixelFormat.RGB8, mask, greedy) }
        throws<InvalidArgumentException> { session.describe(c1.argb(), w, h + 1, mask, greedy) }
        throws<InvalidArgumentException> { session.describe(DamImage.bytes(c1.bytes, w, h, PixelFormat.RGB8, w * 3 - 1), mask, greedy) }
        throws<InvalidArgumentException> { session.describe(DamImage.bytes(c1.bytes, w, h, PixelFormat.RGB8, -w * 3), mask, greedy) }
        throws<InvalidArgumentException> { session.describe(c1.bytes, -w, h, PixelFormat.RGB8, mask, greedy) }
        throws<InvalidArgumentException> { session.describe(c1.bytes, w, -h, PixelFormat.RGB8, mask, greedy) }
        throws<InvalidArgumentException> { session.describe(c1.bytes, 0, 0, PixelFormat.RGB8, mask, greedy) }
        throws<InvalidArgumentException> { session.describe(c1.image(), Region.Mask(DamImage.bytes(ByteArray(4), 2, 3, PixelFormat.GRAY8)), greedy) }
        throws<InvalidRegionException> { session.describe(c1.image(), Region.Mask(DamImage.bytes(ByteArray(100) { 1 }, 10, 10, PixelFormat.GRAY8)), greedy) }
        throws<InvalidArgumentException> { session.describe(DamImage.buffer(ByteBuffer.allocate(w * h * 4), w, h), mask, greedy) }
        throws<InvalidArgumentException> { session.describe(DamImage.buffer(ByteBuffer.allocateDirect(16), w, h), mask, greedy) }
        throws<InvalidArgumentException> { session.describe(c1.image(), Region.Scribble(floatArrayOf(1f, 2f, 3f), 4f), greedy) }
        throws<InvalidArgumentException> { session.describe(c1.image(), mask, greedy.copy(maxNewTokens = -1)) }
        throws<InvalidArgumentException> { session.describe(c1.image(), mask, greedy.copy(query = "a\u0000b")) }
        throws<InvalidRegionException> { session.describe(c1.image(), Region.Alpha, greedy) }
        eq(session.describe(c1.image(), mask, greedy), want)
    }

    test("a throwing callback: its exception surfaces after the call") {
        val boom = IllegalStateException("boom")
        val got = throws<IllegalStateException> { session.describe(c1.image(), mask, greedy) { throw boom } }
        check(got === boom)
        val k = throws<IllegalStateException> {
            session.describeBatch(c1.image(), listOf(mask, mask), greedy) { _, _ -> throw boom }
        }
        check(k === boom)
        val p = throws<IllegalStateException> { DamModel.load(llm, vision, progress = { _, _ -> throw boom }) }
        check(p === boom)
        eq(session.describe(c1.image(), mask, greedy), want)
    }

    test("progress stages and timings") {
        val stages = mutableListOf<LoadStage>()
        DamModel.load(llm, vision, ModelParams(threads = 1)) { s, _ -> stages.add(s); true }.close()
        eq(stages, LoadStage.values().toList())
        session.describe(c1.image(), mask, greedy)
        val t = session.timings()
        check(t.promptTokens > 0 && t.generatedTokens > 0 && t.visionMs > 0) { t.toString() }
    }

    test("closed handles and use after close") {
        val m = DamModel.load(llm, vision, ModelParams(threads = 1))
        val s = m.session(1)
        m.close()
        m.close() // twice is fine
        throws<IllegalStateException> { m.session() }
        throws<IllegalStateException> { m.maxFrames }
        eq(s.describe(c1.image(), mask, greedy), want) // a session outlives its model
        // close() from inside a callback is refused, not a deadlock.
        throws<IllegalStateException> { s.describe(c1.image(), mask, greedy) { s.close(); true } }
        // close() from another thread cancels the running call and waits for it.
        val started = CountDownLatch(1)
        var closer: Thread? = null
        throws<CancelledException> {
            s.describe(c1.image(), mask, greedy) {
                if (closer == null) closer = thread { started.countDown(); s.close() }
                started.await()
                Thread.sleep(50)
                true
            }
        }
        closer!!.join()
        throws<IllegalStateException> { s.describe(c1.image(), mask, greedy) }
        throws<IllegalStateException> { s.cancel() }
        throws<IllegalStateException> { s.timings() }
        s.close()
    }

    session.close()
    model.close()
    println("$passed passed, $failed failed")
    exitProcess(if (failed == 0 && passed > 0) 0 else 1)
}
