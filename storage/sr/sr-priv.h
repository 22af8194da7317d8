/* Test seams of storage/sr (tests/unit only). */
#pragma once

#include "sr.h"

/* Called by the collector in its thread just before a merge copies child's data into parent,
 * with the SR mutex released and the subtree fenced (NULL: nothing). */
extern void (*sr_test_merge_hook)(sr *s, const char *parent, const char *child);
