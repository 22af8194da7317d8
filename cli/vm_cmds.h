/* xe VM commands (vm_cmds.c): vm-* lifecycle, install/uninstall, clone/copy/snapshot, memory
 * and VCPU setters, disk/VIF/CD listings, vbd-* and console, with XCP's parameters, outputs and
 * errors. Their table entries are in commands.c. */
#pragma once

#include "xe.h"

int xe_cmd_vm_install(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_vm_uninstall(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_vm_destroy(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_vm_start(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_vm_shutdown(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_vm_reboot(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_vm_pause(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_vm_unpause(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_vm_suspend(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_vm_resume(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_vm_reset_powerstate(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_vm_clone(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_vm_copy(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_vm_snapshot(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_snapshot_revert(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_vm_vcpu_hotplug(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_vm_memory_limits_set(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_vm_memory_dynamic_range_set(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_vm_memory_static_range_set(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_vm_memory_set(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_vm_memory_target_set(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_vm_disk_list(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_vm_cd_list(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_vm_vif_list(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_vm_cd_insert(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_vm_cd_eject(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_vbd_create(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_vbd_destroy(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_vbd_plug(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_vbd_unplug(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_vbd_insert(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_vbd_eject(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_console(xe_ctx *ctx, const xe_cmd *cmd);

/* XCP's rewrite_provisioning_xml: every sr="..." attribute of a <disk> element of an
 * other_config:disks spec set to sr_uuid (disks without one are left alone). Caller frees. */
char *xe_rewrite_disks_sr(const char *xml, const char *sr_uuid);
