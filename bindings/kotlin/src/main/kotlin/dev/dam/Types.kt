package dev.dam

import java.nio.ByteBuffer

/** Pixel layouts (`dam_pixel_format`). */
enum class PixelFormat(internal val code: Int, val bytesPerPixel: Int) {
    RGB8(0, 3), RGBA8(1, 4), BGRA8(2, 4), GRAY8(3, 1)
}

/** Load stages reported to a progress callback, in this order. */
enum class LoadStage { START, VISION_LOADED, LLM_LOADED, DONE }

/** Length instructions the model was trained with (`dam_length`). */
enum class Length { NONE, WORDS, ABOUT_WORDS, MORE_THAN_WORDS, SENTENCES }

/**
 * Pixels dam reads during a call (copied by the JNI layer, except direct ByteBuffers, which
 * are read in place). Sizes are checked against the buffer before dam sees it: a mismatch is
 * an [InvalidArgumentException].
 */
class DamImage private constructor(
    internal val pixels: Any,
    val width: Int,
    val height: Int,
    val strideBytes: Int,
    val format: PixelFormat
) {
    internal fun dims() = intArrayOf(width, height, strideBytes, format.code)

    companion object {
        /**
         * ARGB_8888 ints (0xAARRGGBB), as Android's `Bitmap.getPixels` and AWT's
         * `BufferedImage.getRGB` give them; [stride] in pixels. In memory they are B, G, R, A
         * bytes on little-endian CPUs (every Android ABI).
         */
        @JvmStatic
        @JvmOverloads
        fun argb(pixels: IntArray, width: Int, height: Int, stride: Int = width) =
            DamImage(pixels, width, height, stride * 4, PixelFormat.BGRA8)

        /** Bytes in [format], rows [strideBytes] apart. */
        @JvmStatic
        @JvmOverloads
        fun bytes(data: ByteArray, width: Int, height: Int, format: PixelFormat,
                  strideBytes: Int = width * format.bytesPerPixel) =
            DamImage(data, width, height, strideBytes, format)

        /**
         * A direct ByteBuffer (e.g. `Bitmap.copyPixelsToBuffer` of an ARGB_8888 bitmap: RGBA
         * bytes), read from its first byte whatever its position; it must stay unchanged
         * during the call.
         */
        @JvmStatic
        @JvmOverloads
        fun buffer(data: ByteBuffer, width: Int, height: Int, format: PixelFormat = PixelFormat.RGBA8,
                   strideBytes: Int = width * format.bytesPerPixel) =
            DamImage(data, width, height, strideBytes, format)
    }
}

/** Which part of the image to describe. */
sealed class Region {
    internal abstract val kind: Int

    /** A mask of the image's size: a pixel is in the region when any channel is > 0. */
    class Mask(val mask: DamImage) : Region() {
        override val kind get() = 0
    }

    /** The image's own alpha channel (alpha > 0); the image must have one. */
    object Alpha : Region() {
        override val kind get() = 1
    }

    /** Pixels whose centre lies in [x0, x1) x [y0, y1); fractions of the size with [normalized]. */
    class Box @JvmOverloads constructor(
        val x0: Float, val y0: Float, val x1: Float, val y1: Float, val normalized: Boolean = false
    ) : Region() {
        override val kind get() = 2
    }

    /** The polyline through [points] (x, y pairs) drawn with a round brush of [brushWidth] pixels. */
    class Scribble @JvmOverloads constructor(
        val points: FloatArray, val brushWidth: Float, val normalized: Boolean = false
    ) : Region() {
        override val kind get() = 3
    }

    /** Clicks (x, y pairs; [labels] 1 = positive): needs a segmenter dam lacks, always refused. */
    class Points @JvmOverloads constructor(val points: FloatArray, val labels: IntArray? = null) : Region() {
        override val kind get() = 4
    }
}

/** What to generate; a null field keeps the library's default (`dam_describe_options_default`). */
data class DescribeOptions @JvmOverloads constructor(
    val maxNewTokens: Int? = null,
    val query: String? = null,
    val length: Length = Length.NONE,
    val lengthValue: Int? = null,
    val temperature: Float? = null,
    val topP: Float? = null,
    val topK: Int? = null,
    val seed: Int? = null
) {
    companion object {
        /** Greedy (temperature 0): deterministic captions. */
        @JvmStatic
        @JvmOverloads
        fun greedy(maxNewTokens: Int? = null) = DescribeOptions(maxNewTokens = maxNewTokens, temperature = 0f)
    }
}

/** How to load a model; a null field keeps the library's default (`dam_model_default_params`). */
data class ModelParams @JvmOverloads constructor(
    val threads: Int? = null,
    val contextLength: Int? = null,
    val kvF32: Boolean? = null,
    val flashAttention: Boolean? = null,
    val gpuLayers: Int? = null,
    val parallelRegions: Int? = null,
    /** Log lines at this `dam_log_level` (0 debug .. 3 error) and above go to logcat / stderr; null: quiet. */
    val logLevel: Int? = null,
    val mainGpu: Int? = null,
    val visionOnCpu: Boolean? = null,
    val repack: Boolean? = null
)

/** Timings of a session's last successful describe call. */
data class Timings(
    val promptTokens: Int,
    val generatedTokens: Int,
    val preprocessMs: Double,
    val visionMs: Double,
    val prefillMs: Double,
    val decodeMs: Double
)
