package dev.dam

import java.io.Closeable

/**
 * One conversation state on a model: use it from one thread at a time ([cancel] excepted).
 * [close] frees it; a call running on another thread is cancelled and finishes first.
 * Callbacks run on the calling thread; an exception a callback throws stops generation and
 * is rethrown by the describe call (dam itself is never unwound through).
 */
class DamSession internal constructor(ptr: Long) : Closeable {
    private val handle = NativeHandle(ptr, "session", DamNative::sessionCancel, DamNative::sessionFree)

    /** Describes [region] of [image]; [onToken] gets each piece, false stops (the caption so far is returned). */
    @JvmOverloads
    fun describe(image: DamImage, region: Region, options: DescribeOptions = DescribeOptions(),
                 onToken: ((String) -> Boolean)? = null): String =
        run(DamNative.MODE_SINGLE, listOf(image), listOf(region), options,
            onToken?.let { f -> { _: Int, p: String -> f(p) } })[0]

    /** [describe] for Android's ARGB_8888 ints (`Bitmap.getPixels`), rows `width` apart. */
    @JvmOverloads
    fun describe(pixels: IntArray, width: Int, height: Int, region: Region,
                 options: DescribeOptions = DescribeOptions(), onToken: ((String) -> Boolean)? = null): String =
        describe(DamImage.argb(pixels, width, height), region, options, onToken)

    /** [describe] for bytes in [format], rows tightly packed. */
    @JvmOverloads
    fun describe(pixels: ByteArray, width: Int, height: Int, format: PixelFormat, region: Region,
                 options: DescribeOptions = DescribeOptions(), onToken: ((String) -> Boolean)? = null): String =
        describe(DamImage.bytes(pixels, width, height, format), region, options, onToken)

    /** One caption of the region followed through the video [frames] (1 ..= the model's maxFrames). */
    @JvmOverloads
    fun describeVideo(frames: List<Pair<DamImage, Region>>, options: DescribeOptions = DescribeOptions(),
                      onToken: ((String) -> Boolean)? = null): String =
        run(DamNative.MODE_VIDEO, frames.map { it.first }, frames.map { it.second }, options,
            onToken?.let { f -> { _: Int, p: String -> f(p) } })[0]

    /**
     * One caption per region of [image] (1 ..= 64), each equal to [describe]'s; [onToken]
     * gets (region index, piece), false stops that region's caption.
     */
    @JvmOverloads
    fun describeBatch(image: DamImage, regions: List<Region>, options: DescribeOptions = DescribeOptions(),
                      onToken: ((Int, String) -> Boolean)? = null): List<String> =
        run(DamNative.MODE_BATCH, listOf(image), regions, options, onToken)

    /** Cancels the running describe call (or the next one). Any thread. */
    fun cancel() = handle.use { DamNative.sessionCancel(it) }

    /** Timings of the last successful describe call. */
    fun timings(): Timings = handle.use {
        val t = DamNative.sessionTimings(it)
        Timings(t[0].toInt(), t[1].toInt(), t[2], t[3], t[4], t[5])
    }

    override fun close() = handle.close()

    private fun run(mode: Int, images: List<DamImage>, regions: List<Region>, o: DescribeOptions,
                    onToken: ((Int, String) -> Boolean)?): List<String> {
        val n = regions.size
        val coords = FloatArray(6 * n)
        val points = arrayOfNulls<FloatArray>(n)
        val labels = arrayOfNulls<IntArray>(n)
        val masks = arrayOfNulls<Any>(n)
        val maskDims = IntArray(4 * n)
        regions.forEachIndexed { i, r ->
            when (r) {
                is Region.Mask -> {
                    masks[i] = r.mask.pixels
                    r.mask.dims().copyInto(maskDims, 4 * i)
                }
                is Region.Box -> floatArrayOf(if (r.normalized) 1f else 0f, 0f, r.x0, r.y0, r.x1, r.y1)
                    .copyInto(coords, 6 * i)
                is Region.Scribble -> {
                    coords[6 * i] = if (r.normalized) 1f else 0f
                    coords[6 * i + 1] = r.brushWidth
                    points[i] = r.points
                }
                is Region.Points -> {
                    points[i] = r.points
                    labels[i] = r.labels
                }
                Region.Alpha -> Unit
            }
        }
        val u = DamNative.UNSET
        val optInts = intArrayOf(o.maxNewTokens ?: u, o.length.ordinal, o.lengthValue ?: u, o.topK ?: u, o.seed ?: u)
        val optFloats = floatArrayOf(o.temperature ?: Float.NaN, o.topP ?: Float.NaN)
        val imageDims = IntArray(4 * images.size)
        images.forEachIndexed { i, im -> im.dims().copyInto(imageDims, 4 * i) }
        val out = handle.use {
            DamNative.describe(
                it, mode, images.map { im -> im.pixels }.toTypedArray(), imageDims,
                regions.map { r -> r.kind }.toIntArray(), coords, points, labels, masks, maskDims,
                optInts, optFloats, o.query?.let(::utf8), onToken?.let(::TokenSink)
            )
        }
        return out.map { String(it, Charsets.UTF_8) }
    }
}
