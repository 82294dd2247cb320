// Android library module of dam's Kotlin bindings: the Kotlin sources of ../src/main/kotlin and
// libdam_jni built by ../CMakeLists.txt with the NDK, next to a prebuilt libdam.so per ABI in
// src/main/jniLibs/<abi>/ (see ../README.md). Not built on dam's CI machines (no Android SDK):
// it follows llama.cpp's and whisper.cpp's Android modules.
plugins {
    id("com.android.library")
    id("org.jetbrains.kotlin.android")
}

android {
    namespace = "dev.dam"
    compileSdk = 34

    defaultConfig {
        minSdk = 24
        ndk {
            abiFilters += listOf("arm64-v8a", "x86_64")
        }
        externalNativeBuild {
            cmake {
                arguments += listOf("-DANDROID_STL=none")
            }
        }
    }

    externalNativeBuild {
        cmake {
            path = file("../CMakeLists.txt")
            version = "3.22.1"
        }
    }

    sourceSets["main"].java.srcDirs("../src/main/kotlin")

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_1_8
        targetCompatibility = JavaVersion.VERSION_1_8
    }
    kotlinOptions {
        jvmTarget = "1.8"
    }
}
