/* Confines nuvem-vmm once its set-up is done: no new privileges, no capabilities, and a
 * seccomp allowlist of the system calls the VMM makes at run time (built with libseccomp). */
#pragma once

#include <stdbool.h>

/* Returns 0, or -errno (logged). Skipped (returns 0, logged) in sanitizer builds, whose
 * runtimes need system calls the filter refuses (LeakSanitizer ptrace()s the process). */
int vmm_sandbox(void);
