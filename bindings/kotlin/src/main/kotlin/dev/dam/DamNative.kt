package dev.dam

/**
 * The JNI functions of libdam_jni (bindings/kotlin/jni/dam_jni.c). Strings cross as UTF-8
 * byte arrays; handles are the C pointers as Long. Internal: the public API wraps them.
 */
internal object DamNative {
    /** An int option left at the library's default (dam_jni.c's UNSET). */
    const val UNSET = Int.MIN_VALUE
    const val MODE_SINGLE = 0
    const val MODE_VIDEO = 1
    const val MODE_BATCH = 2

    init {
        // -Ddam.jni.library=/abs/path/libdam_jni.so overrides the library path lookup.
        val path = System.getProperty("dam.jni.library")
        if (path != null) System.load(path) else System.loadLibrary("dam_jni")
    }

    @JvmStatic external fun version(): String
    @JvmStatic external fun apiVersion(): Int
    @JvmStatic external fun headerApiVersion(): Int
    @JvmStatic external fun statusName(status: Int): String
    @JvmStatic external fun backendInfo(): ByteArray

    @JvmStatic external fun modelLoad(llm: ByteArray, vision: ByteArray, params: IntArray, progress: ProgressSink?): Long
    @JvmStatic external fun modelFree(model: Long)
    @JvmStatic external fun modelMaxFrames(model: Long): Int
    @JvmStatic external fun sessionNew(model: Long, threads: Int): Long
    @JvmStatic external fun sessionFree(session: Long)
    @JvmStatic external fun sessionCancel(session: Long)
    @JvmStatic external fun sessionTimings(session: Long): DoubleArray

    @JvmStatic external fun describe(
        session: Long, mode: Int, images: Array<Any?>, imageDims: IntArray,
        kinds: IntArray, coords: FloatArray, points: Array<FloatArray?>, labels: Array<IntArray?>,
        masks: Array<Any?>, maskDims: IntArray,
        optInts: IntArray, optFloats: FloatArray, query: ByteArray?, sink: TokenSink?
    ): Array<ByteArray>
}

/** Receives caption pieces from JNI (region index, UTF-8 bytes); false stops. */
internal class TokenSink(private val f: (Int, String) -> Boolean) {
    fun onToken(region: Int, piece: ByteArray): Boolean = f(region, String(piece, Charsets.UTF_8))
}

/** Receives load progress from JNI; false aborts the load. */
internal class ProgressSink(private val f: (LoadStage, Float) -> Boolean) {
    fun onProgress(stage: Int, progress: Float): Boolean = f(LoadStage.values()[stage], progress)
}

/** UTF-8 for dam's C strings, which end at the first NUL: one inside is refused, not cut. */
internal fun utf8(s: String): ByteArray {
    if (s.indexOf('\u0000') >= 0) throw InvalidArgumentException("a string contains NUL")
    return s.toByteArray(Charsets.UTF_8)
}
