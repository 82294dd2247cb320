package dev.dam

/**
 * A failed dam call: [status] is the `dam_status` (negative), [message] dam's message.
 * Each status has its own subclass, so callers catch what they handle.
 */
open class DamException internal constructor(val status: Int, message: String) : Exception(message) {
    companion object {
        /** The exception for [status] (called by the JNI layer with dam's message as UTF-8). */
        @JvmStatic
        fun of(status: Int, message: ByteArray): DamException = of(status, String(message, Charsets.UTF_8))

        @JvmStatic
        fun of(status: Int, message: String): DamException = when (status) {
            -1 -> InvalidArgumentException(message)
            -2 -> InvalidRegionException(message)
            -3 -> UnsupportedRegionException(message)
            -4 -> InvalidModelException(message)
            -5 -> DamIoException(message)
            -6 -> ContextOverflowException(message)
            -7 -> CancelledException(message)
            -8 -> BackendException(message)
            -9 -> VersionMismatchException(message)
            -10 -> BufferTooSmallException(message)
            -11 -> InternalException(message)
            else -> DamException(status, message)
        }
    }
}

/** A bad argument: image size, stride or format, an option out of range, a busy session. */
class InvalidArgumentException(message: String) : DamException(-1, message)
/** The region is empty, outside the image, of another size than the image, or malformed. */
class InvalidRegionException(message: String) : DamException(-2, message)
/** A region kind dam cannot handle yet (points: needs a segmenter). */
class UnsupportedRegionException(message: String) : DamException(-3, message)
/** A model file is malformed or the two files do not match. */
class InvalidModelException(message: String) : DamException(-4, message)
/** A file cannot be opened or read. */
class DamIoException(message: String) : DamException(-5, message)
/** The prompt and the caption do not fit into the context window. */
class ContextOverflowException(message: String) : DamException(-6, message)
/** The call was cancelled ([DamSession.cancel], or a progress callback returned false). */
class CancelledException(message: String) : DamException(-7, message)
/** ggml / llama.cpp failed (out of memory in a compute buffer, ...). */
class BackendException(message: String) : DamException(-8, message)
/** libdam is older than, or of another major version than, the header this was built with. */
class VersionMismatchException(message: String) : DamException(-9, message)
/** Not raised by these bindings (they size caption buffers themselves); kept for completeness. */
class BufferTooSmallException(message: String) : DamException(-10, message)
/** A bug in dam. */
class InternalException(message: String) : DamException(-11, message)
