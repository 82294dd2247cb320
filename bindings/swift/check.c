/* Imports dam's C API through the clang module (bindings/swift/module.modulemap), as Swift's
 * `import CDam` does (in C: the pragma; Objective-C: `@import CDam;`), and calls it.
 * tests/bindings.rs builds it with clang -fmodules and runs it. */
#pragma clang module import CDam

#include <stdio.h>

int main(void) {
    dam_model_params mp = dam_model_default_params();
    if (mp.struct_size != sizeof mp || dam_api_version() < DAM_API_VERSION) return 1;
    printf("CDam %s api %u\n", dam_version(), (unsigned)dam_api_version());
    return 0;
}
