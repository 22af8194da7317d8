/* xe storage commands (storage_cmds.c): sr-*, vdi-* and pbd-* operations, entered in the
 * custom command table in commands.c. */
#pragma once

#include "xe.h"

int xe_cmd_sr_create(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_sr_probe(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_sr_destroy(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_sr_forget(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_sr_scan(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_sr_update(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_vdi_create(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_vdi_destroy(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_vdi_forget(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_vdi_resize(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_vdi_snapshot(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_vdi_clone(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_vdi_copy(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_pbd_plug(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_pbd_unplug(xe_ctx *ctx, const xe_cmd *cmd);

/* XCP's Record_util.bytes_of_string: "<int>[ ]<suffix>", suffix (any case) empty, bytes, b,
 * k/kb/kib, m/mb/mib, g/gb/gib, t/tb/tib (all powers of 1024); false when malformed,
 * negative or overflowing. */
bool xe_bytes_of_string(const char *s, long long *ret);
