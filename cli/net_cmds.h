/* xe network commands (net_cmds.c): network-create, pif-*, vif-*, vlan-* and bond-*
 * operations, entered in the custom command table in commands.c. */
#pragma once

#include "xe.h"

int xe_cmd_network_create(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_pif_scan(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_pif_plug(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_pif_unplug(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_pif_reconfigure_ip(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_vif_create(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_vif_plug(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_vif_unplug(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_vlan_create(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_vlan_destroy(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_bond_create(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_bond_destroy(xe_ctx *ctx, const xe_cmd *cmd);
int xe_cmd_bond_set_mode(xe_ctx *ctx, const xe_cmd *cmd);
