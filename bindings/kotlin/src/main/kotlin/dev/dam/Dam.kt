package dev.dam

import java.io.Closeable
import java.util.concurrent.locks.ReentrantLock
import kotlin.concurrent.withLock

/** Library facts. */
object Dam {
    /** The library's version, e.g. "0.1.0". */
    @JvmStatic fun version(): String = DamNative.version()

    /** The C API version of libdam, `(major shl 16) or minor`. */
    @JvmStatic fun apiVersion(): Int = DamNative.apiVersion()

    /** The C API version the JNI layer was compiled against. */
    @JvmStatic fun headerApiVersion(): Int = DamNative.headerApiVersion()

    /** The name of a status, e.g. "DAM_STATUS_INVALID_REGION". */
    @JvmStatic fun statusName(status: Int): String = DamNative.statusName(status)

    /** JSON describing the build and the machine (backends, devices, SIMD features). */
    @JvmStatic fun backendInfo(): String = String(DamNative.backendInfo(), Charsets.UTF_8)
}

/**
 * A native pointer that [close] frees once: calls in flight finish first ([onBusyClose] may
 * interrupt them), calls after it throw [IllegalStateException]. Closing from inside a call
 * on the same thread (a callback) is refused rather than deadlocking.
 */
internal class NativeHandle(
    private var ptr: Long,
    private val what: String,
    private val onBusyClose: (Long) -> Unit,
    private val free: (Long) -> Unit
) {
    private val lock = ReentrantLock()
    private val idle = lock.newCondition()
    private var users = 0
    private val depth = ThreadLocal<Int>()

    fun <T> use(block: (Long) -> T): T {
        val p = lock.withLock {
            check(ptr != 0L) { "$what is closed" }
            users++
            ptr
        }
        depth.set((depth.get() ?: 0) + 1)
        try {
            return block(p)
        } finally {
            depth.set(depth.get() - 1)
            lock.withLock {
                users--
                if (users == 0) idle.signalAll()
            }
        }
    }

    fun close() {
        check((depth.get() ?: 0) == 0) { "$what closed from inside one of its own calls" }
        val p = lock.withLock {
            val p = ptr
            if (p == 0L) return
            ptr = 0L
            if (users > 0) onBusyClose(p)
            while (users > 0) idle.awaitUninterruptibly()
            p
        }
        free(p)
    }
}

/**
 * A loaded model (both GGUF files, memory-mapped, immutable): share one across threads and
 * give each thread its own [DamSession]. Close it when done (`use {}`); sessions may outlive it.
 */
class DamModel private constructor(ptr: Long) : Closeable {
    private val handle = NativeHandle(ptr, "model", {}, DamNative::modelFree)

    /** The most frames [DamSession.describeVideo] takes. */
    val maxFrames: Int get() = handle.use { DamNative.modelMaxFrames(it) }

    /** A new session (KV cache, compute buffers); [threads] 0 = the model's. */
    @JvmOverloads
    fun session(threads: Int = 0): DamSession = handle.use { DamSession(DamNative.sessionNew(it, threads)) }

    /** One caption through a temporary session (a [DamSession] reused is faster). */
    @JvmOverloads
    fun describe(image: DamImage, region: Region, options: DescribeOptions = DescribeOptions(),
                 onToken: ((String) -> Boolean)? = null): String =
        session().use { it.describe(image, region, options, onToken) }

    override fun close() = handle.close()

    companion object {
        /**
         * Loads a model from its `*-llm-*.gguf` and `*-vision-*.gguf` files. [progress] runs on
         * this thread; returning false cancels the load ([CancelledException]), and an exception
         * it throws is rethrown here.
         */
        @JvmStatic
        @JvmOverloads
        fun load(llm: String, vision: String, params: ModelParams = ModelParams(),
                 progress: ((LoadStage, Float) -> Boolean)? = null): DamModel {
            val u = DamNative.UNSET
            fun b(v: Boolean?) = if (v == null) u else if (v) 1 else 0
            val ints = intArrayOf(
                params.threads ?: u, params.contextLength ?: u, b(params.kvF32), // kv_type: 1 = f32
                if (params.flashAttention == null) u else if (params.flashAttention) 1 else 2,
                params.gpuLayers ?: u, params.parallelRegions ?: u, params.logLevel ?: -1,
                params.mainGpu ?: u, b(params.visionOnCpu), b(params.repack)
            )
            val sink = if (progress == null) null else ProgressSink(progress)
            return DamModel(DamNative.modelLoad(utf8(llm), utf8(vision), ints, sink))
        }
    }
}
