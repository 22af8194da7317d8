/* xe's per-class views and error texts: the CLI data that the generated tables do not carry
 * yet (XCP's record layouts, default list columns, error doc sentences). Kept in this one
 * file so it can move into api-schema/gen.py as a whole. */
#define _GNU_SOURCE
#include "xe.h"

#include "mem.h"

#include <string.h>

#define STRV(...) ((const char *const[]){__VA_ARGS__, NULL})

/* XCP's task record (records.ml): its names, order and tags differ from the datamodel's. */
static const xe_col_def task_cols[] = {
    {"uuid", "uuid", 0},
    {"name-label", "name_label", XE_COL_RO},
    {"name-description", "name_description", XE_COL_RO},
    {"subtask_of", "subtask_of", 0},
    {"subtasks", "subtasks", XE_COL_PLAIN},
    {"resident-on", "resident_on", 0},
    {"status", "status", 0},
    {"progress", "progress", 0},
    {"type", "type", 0},
    {"result", "result", 0},
    {"created", "created", 0},
    {"finished", "finished", 0},
    {"error_info", "error_info", XE_COL_PLAIN},
    {"allowed_operations", "allowed_operations", XE_COL_PLAIN},
    {"current_operations", "current_operations", XE_COL_PLAIN | XE_COL_VALUES},
    {"other-config", "other_config", 0},
};

/* XCP's pool record; columns without a backing field here (supported-sr-types,
 * license-state, https-only, ssh-*) are left out until the fields exist. */
static const xe_col_def pool_cols[] = {
    {"uuid", "uuid", 0},
    {"name-label", "name_label", 0},
    {"name-description", "name_description", 0},
    {"master", "master", 0},
    {"default-SR", "default_SR", 0},
    {"crash-dump-SR", "crash_dump_SR", 0},
    {"suspend-image-SR", "suspend_image_SR", 0},
    {"other-config", "other_config", 0},
    {"allowed-operations", "allowed_operations", 0},
    {"current-operations", "current_operations", XE_COL_VALUES},
    {"ha-enabled", "ha_enabled", 0},
    {"ha-configuration", "ha_configuration", XE_COL_PLAIN},
    {"ha-statefiles", "ha_statefiles", XE_COL_PLAIN},
    {"ha-host-failures-to-tolerate", "ha_host_failures_to_tolerate", 0},
    {"ha-plan-exists-for", "ha_plan_exists_for", 0},
    {"ha-allow-overcommit", "ha_allow_overcommit", 0},
    {"ha-overcommitted", "ha_overcommitted", 0},
    {"ha-reboot-vm-on-internal-shutdown", "ha_reboot_vm_on_internal_shutdown", 0},
    {"blobs", "blobs", XE_COL_PLAIN},
    {"wlb-url", "wlb_url", 0},
    {"wlb-username", "wlb_username", 0},
    {"wlb-enabled", "wlb_enabled", 0},
    {"wlb-verify-cert", "wlb_verify_cert", 0},
    {"igmp-snooping-enabled", "igmp_snooping_enabled", 0},
    {"gui-config", "gui_config", 0},
    {"health-check-config", "health_check_config", 0},
    {"vswitch-controller", "vswitch_controller", XE_COL_HIDDEN},
    {"restrictions", "restrictions", XE_COL_PLAIN},
    {"tags", "tags", 0},
    {"ha-cluster-stack", "ha_cluster_stack", 0},
    {"guest-agent-config", "guest_agent_config", 0},
    {"cpu_info", "cpu_info", 0},
    {"policy-no-vendor-device", "policy_no_vendor_device", 0},
    {"live-patching-disabled", "live_patching_disabled", 0},
    {"uefi-certificates", "uefi_certificates", XE_COL_HIDDEN},
    {"custom-uefi-certificates", "custom_uefi_certificates", XE_COL_HIDDEN},
    {"tls-verification-enabled", "tls_verification_enabled", 0},
    {"client-certificate-auth-enabled", "client_certificate_auth_enabled", 0},
    {"client-certificate-auth-name", "client_certificate_auth_name", 0},
    {"repositories", "repositories", 0},
    {"repository-proxy-url", "repository_proxy_url", 0},
    {"repository-proxy-username", "repository_proxy_username", 0},
    {"migration-compression", "migration_compression", 0},
    {"coordinator-bias", "coordinator_bias", 0},
    {"telemetry-frequency", "telemetry_frequency", 0},
    {"telemetry-next-collection", "telemetry_next_collection", 0},
    {"last-update-sync", "last_update_sync", 0},
    {"update-sync-frequency", "update_sync_frequency", 0},
    {"update-sync-day", "update_sync_day", 0},
    {"update-sync-enabled", "update_sync_enabled", 0},
    {"auto-update-vm-secureboot-certificates", "auto_update_vm_secureboot_certificates", 0},
    {"recommendations", "recommendations", XE_COL_RO},
    {"ext-auth-cache-enabled", "ext_auth_cache_enabled", XE_COL_HIDDEN},
    {"ext-auth-cache-size", "ext_auth_cache_size", XE_COL_HIDDEN},
    {"ext-auth-cache-expiry", "ext_auth_cache_expiry", XE_COL_HIDDEN},
    {"license-server", "license_server", 0},
    {"limit-console-sessions", "limit_console_sessions", 0},
    {"vm-console-idle-timeout", "vm_console_idle_timeout", 0},
};

/* XCP's host record; metrics-derived columns (memory-total, memory-free, ...) come with
 * the host metrics issue. */
static const xe_col_def host_cols[] = {
    {"uuid", "uuid", 0},
    {"name-label", "name_label", 0},
    {"name-description", "name_description", 0},
    {"allowed-operations", "allowed_operations", 0},
    {"current-operations", "current_operations", XE_COL_VALUES},
    {"enabled", "enabled", 0},
    {"display", "display", XE_COL_RO},
    {"API-version-major", "API_version_major", 0},
    {"API-version-minor", "API_version_minor", 0},
    {"API-version-vendor", "API_version_vendor", 0},
    {"API-version-vendor-implementation", "API_version_vendor_implementation", 0},
    {"logging", "logging", 0},
    {"suspend-image-sr-uuid", "suspend_image_sr", 0},
    {"crash-dump-sr-uuid", "crash_dump_sr", 0},
    {"software-version", "software_version", 0},
    {"capabilities", "capabilities", 0},
    {"other-config", "other_config", 0},
    {"cpu_info", "cpu_info", 0},
    {"chipset-info", "chipset_info", 0},
    {"hostname", "hostname", XE_COL_RO},
    {"address", "address", XE_COL_RO},
    {"supported-bootloaders", "supported_bootloaders", 0},
    {"blobs", "blobs", XE_COL_PLAIN},
    {"memory-overhead", "memory_overhead", 0},
    {"patches", "patches", XE_COL_DEPRECATED | XE_COL_COMMA},
    {"updates", "updates", XE_COL_COMMA},
    {"ha-statefiles", "ha_statefiles", XE_COL_PLAIN},
    {"ha-network-peers", "ha_network_peers", XE_COL_PLAIN},
    {"external-auth-type", "external_auth_type", 0},
    {"external-auth-service-name", "external_auth_service_name", 0},
    {"external-auth-configuration", "external_auth_configuration", 0},
    {"edition", "edition", 0},
    {"license-server", "license_server", XE_COL_RO},
    {"power-on-mode", "power_on_mode", 0},
    {"power-on-config", "power_on_config", 0},
    {"local-cache-sr", "local_cache_sr", 0},
    {"tags", "tags", 0},
    {"ssl-legacy", "ssl_legacy", 0},
    {"guest_VCPUs_params", "guest_VCPUs_params", 0},
    {"virtual-hardware-platform-versions", "virtual_hardware_platform_versions", 0},
    {"control-domain-uuid", "control_domain", 0},
    {"resident-vms", "resident_VMs", 0},
    {"updates-requiring-reboot", "updates_requiring_reboot", 0},
    {"features", "features", 0},
    {"iscsi_iqn", "iscsi_iqn", 0},
    {"multipathing", "multipathing", 0},
    {"uefi-certificates", "uefi_certificates", XE_COL_HIDDEN},
    {"numa-affinity-policy", "numa_affinity_policy", 0},
    {"tls-verification-enabled", "tls_verification_enabled", 0},
    {"last-software-update", "last_software_update", 0},
    {"latest-synced-updates-applied", "latest_synced_updates_applied", 0},
    {"pending-guidances-recommended", "pending_guidances_recommended", 0},
    {"pending-guidances-full", "pending_guidances_full", 0},
    {"last-update-hash", "last_update_hash", 0},
};

/* XCP's VM record (records.ml vm_record), metrics and guest metrics followed through their
 * references. Columns XCP computes with extra calls (possible-hosts, allowed-VBD-devices,
 * memory-target, VCPUs-utilisation, last-boot-record) come with the VM issues. */
static const xe_col_def vm_cols[] = {
    {"uuid", "uuid", 0},
    {"name-label", "name_label", 0},
    {"name-description", "name_description", 0},
    {"user-version", "user_version", 0},
    {"is-a-template", "is_a_template", 0},
    {"is-default-template", "is_default_template", 0},
    {"is-a-snapshot", "is_a_snapshot", 0},
    {"snapshot-of", "snapshot_of", 0},
    {"snapshots", "snapshots", XE_COL_PLAIN},
    {"snapshot-time", "snapshot_time", 0},
    {"transportable-snapshot-id", "transportable_snapshot_id", XE_COL_HIDDEN},
    {"snapshot-info", "snapshot_info", XE_COL_PLAIN},
    {"parent", "parent", 0},
    {"children", "children", XE_COL_PLAIN},
    {"is-control-domain", "is_control_domain", 0},
    {"power-state", "power_state", 0},
    {"memory-actual", "metrics>memory_actual", 0},
    {"memory-overhead", "memory_overhead", 0},
    {"memory-static-max", "memory_static_max", 0},
    {"memory-dynamic-max", "memory_dynamic_max", 0},
    {"memory-dynamic-min", "memory_dynamic_min", 0},
    {"memory-static-min", "memory_static_min", 0},
    {"suspend-VDI-uuid", "suspend_VDI", 0},
    {"suspend-SR-uuid", "suspend_SR", 0},
    {"VCPUs-params", "VCPUs_params", 0},
    {"VCPUs-max", "VCPUs_max", 0},
    {"VCPUs-at-startup", "VCPUs_at_startup", 0},
    {"actions-after-shutdown", "actions_after_shutdown", 0},
    {"actions-after-softreboot", "actions_after_softreboot", 0},
    {"actions-after-reboot", "actions_after_reboot", 0},
    {"actions-after-crash", "actions_after_crash", 0},
    {"console-uuids", "consoles", 0},
    {"hvm", "metrics>hvm", 0},
    {"nomigrate", "metrics>nomigrate", XE_COL_HIDDEN},
    {"nested-virt", "metrics>nested_virt", XE_COL_HIDDEN},
    {"platform", "platform", 0},
    {"numa-optimised", "metrics>numa_optimised", 0},
    {"numa-nodes", "metrics>numa_nodes", 0},
    {"numa-node-memory", "metrics>numa_node_memory", 0},
    {"allowed-operations", "allowed_operations", 0},
    {"current-operations", "current_operations", XE_COL_VALUES},
    {"blocked-operations", "blocked_operations", 0},
    {"domain-type", "domain_type", 0},
    {"current-domain-type", "metrics>current_domain_type", 0},
    {"HVM-boot-policy", "HVM_boot_policy", 0},
    {"HVM-boot-params", "HVM_boot_params", 0},
    {"HVM-shadow-multiplier", "HVM_shadow_multiplier", 0},
    {"NVRAM", "NVRAM", XE_COL_HIDDEN},
    {"PV-kernel", "PV_kernel", 0},
    {"PV-ramdisk", "PV_ramdisk", 0},
    {"PV-args", "PV_args", 0},
    {"PV-legacy-args", "PV_legacy_args", 0},
    {"PV-bootloader", "PV_bootloader", 0},
    {"PV-bootloader-args", "PV_bootloader_args", 0},
    {"last-boot-CPU-flags", "last_boot_CPU_flags", XE_COL_PLAIN},
    {"resident-on", "resident_on", 0},
    {"affinity", "affinity", 0},
    {"other-config", "other_config", 0},
    {"dom-id", "domid", 0},
    {"recommendations", "recommendations", 0},
    {"xenstore-data", "xenstore_data", 0},
    {"ha-always-run", "ha_always_run", XE_COL_DEPRECATED},
    {"ha-restart-priority", "ha_restart_priority", 0},
    {"blobs", "blobs", XE_COL_PLAIN},
    {"start-time", "metrics>start_time", 0},
    {"install-time", "metrics>install_time", 0},
    {"VCPUs-number", "metrics>VCPUs_number", 0},
    {"os-version", "guest_metrics>os_version", 0},
    {"netbios-name", "guest_metrics>netbios_name", 0},
    {"PV-drivers-version", "guest_metrics>PV_drivers_version", 0},
    {"PV-drivers-up-to-date", "guest_metrics>PV_drivers_up_to_date", XE_COL_DEPRECATED},
    {"memory", "guest_metrics>memory", 0},
    {"disks", "guest_metrics>disks", 0},
    {"VBDs", "VBDs", 0},
    {"networks", "guest_metrics>networks", 0},
    {"services", "guest_metrics>services", 0},
    {"PV-drivers-detected", "guest_metrics>PV_drivers_detected", 0},
    {"other", "guest_metrics>other", 0},
    {"live", "guest_metrics>live", 0},
    {"guest-metrics-last-updated", "guest_metrics>last_updated", 0},
    {"can-use-hotplug-vbd", "guest_metrics>can_use_hotplug_vbd", 0},
    {"can-use-hotplug-vif", "guest_metrics>can_use_hotplug_vif", 0},
    {"tags", "tags", 0},
    {"appliance", "appliance", 0},
    {"groups", "groups", XE_COL_PLAIN},
    {"secureboot-certificates-state", "secureboot_certificates_state", 0},
    {"snapshot-schedule", "snapshot_schedule", 0},
    {"is-vmss-snapshot", "is_vmss_snapshot", 0},
    {"start-delay", "start_delay", 0},
    {"shutdown-delay", "shutdown_delay", 0},
    {"order", "order", 0},
    {"version", "version", 0},
    {"generation-id", "generation_id", 0},
    {"hardware-platform-version", "hardware_platform_version", 0},
    {"has-vendor-device", "has_vendor_device", 0},
    {"requires-reboot", "requires_reboot", 0},
    {"reference-label", "reference_label", 0},
    {"bios-strings", "bios_strings", 0},
    {"pending-guidances", "pending_guidances", XE_COL_PLAIN},
    {"vtpms", "VTPMs", XE_COL_PLAIN},
    {"pending-guidances-recommended", "pending_guidances_recommended", XE_COL_PLAIN},
    {"pending-guidances-full", "pending_guidances_full", XE_COL_PLAIN},
};

/* XCP's message, role and secret records. */
static const xe_col_def message_cols[] = {
    {"uuid", "uuid", 0}, {"name", "name", 0},         {"priority", "priority", 0},
    {"class", "cls", 0}, {"obj-uuid", "obj_uuid", 0}, {"timestamp", "timestamp", 0},
    {"body", "body", 0},
};
static const xe_col_def role_cols[] = {
    {"uuid", "uuid", 0},
    {"name", "name_label", 0},
    {"description", "name_description", 0},
};
static const xe_col_def secret_cols[] = {
    {"uuid", "uuid", 0},
    {"value", "value", 0},
};

static const xe_kv vm_filters[] = {{"is-a-template", "false"}};
static const xe_kv template_filters[] = {{"is-a-template", "true"}, {"is-a-snapshot", "false"}};
static const xe_kv snapshot_filters[] = {{"is-a-snapshot", "true"}};

/* XCP's records for the storage, network and console classes (records.ml); columns XCP
 * computes with extra calls (io_read_kbs, sr host, PIF metrics, cpu utilisation) are left out. */
/* PIF */
static const xe_col_def pif_cols[] = {
    {"uuid", "uuid", 0},
    {"device", "device", XE_COL_RO},
    {"MAC", "MAC", XE_COL_RO},
    {"physical", "physical", XE_COL_RO},
    {"managed", "managed", XE_COL_RO},
    {"currently-attached", "currently_attached", XE_COL_RO},
    {"MTU", "MTU", XE_COL_RO},
    {"VLAN", "VLAN", XE_COL_RO},
    {"vlan-master-of", "VLAN_master_of", XE_COL_RO},
    {"vlan-slave-of", "VLAN_slave_of", XE_COL_PLAIN},
    {"bond-master-of", "bond_master_of", XE_COL_PLAIN},
    {"bond-slave-of", "bond_slave_of", XE_COL_RO},
    {"sriov-physical-PIF-of", "sriov_physical_PIF_of", XE_COL_PLAIN},
    {"sriov-logical-PIF-of", "sriov_logical_PIF_of", XE_COL_PLAIN},
    {"tunnel-access-PIF-of", "tunnel_access_PIF_of", XE_COL_PLAIN},
    {"tunnel-transport-PIF-of", "tunnel_transport_PIF_of", XE_COL_PLAIN},
    {"management", "management", XE_COL_RO},
    {"network-uuid", "network", XE_COL_RO},
    {"network-name-label", "network>name_label", XE_COL_RO},
    {"host-uuid", "host", XE_COL_RO},
    {"host-name-label", "host>name_label", XE_COL_RO},
    {"IP-configuration-mode", "ip_configuration_mode", XE_COL_RO},
    {"IP", "IP", XE_COL_RO},
    {"netmask", "netmask", XE_COL_RO},
    {"gateway", "gateway", XE_COL_RO},
    {"IPv6-configuration-mode", "ipv6_configuration_mode", XE_COL_RO},
    {"IPv6", "IPv6", XE_COL_PLAIN},
    {"IPv6-gateway", "ipv6_gateway", XE_COL_RO},
    {"primary-address-type", "primary_address_type", XE_COL_RO},
    {"DNS", "DNS", XE_COL_RO},
    {"properties", "properties", XE_COL_RO},
    {"capabilities", "capabilities", XE_COL_RO},
    {"disallow-unplug", "disallow_unplug", 0},
    {"other-config", "other_config", 0},
    {"igmp-snooping-status", "igmp_snooping_status", XE_COL_RO},
};
/* VIF */
static const xe_col_def vif_cols[] = {
    {"uuid", "uuid", 0},
    {"vm-uuid", "VM", XE_COL_RO},
    {"vm-name-label", "VM>name_label", XE_COL_RO},
    {"allowed-operations", "allowed_operations", XE_COL_RO},
    {"current-operations", "current_operations", XE_COL_VALUES},
    {"device", "device", XE_COL_RO},
    {"MAC", "MAC", XE_COL_RO},
    {"MAC-autogenerated", "MAC_autogenerated", XE_COL_RO},
    {"MTU", "MTU", XE_COL_RO},
    {"currently-attached", "currently_attached", XE_COL_RO},
    {"qos_algorithm_type", "qos_algorithm_type", 0},
    {"qos_algorithm_params", "qos_algorithm_params", 0},
    {"qos_supported_algorithms", "qos_supported_algorithms", XE_COL_RO},
    {"other-config", "other_config", 0},
    {"network-uuid", "network", XE_COL_RO},
    {"network-name-label", "network>name_label", XE_COL_RO},
    {"locking-mode", "locking_mode", 0},
    {"ipv4-allowed", "ipv4_allowed", 0},
    {"ipv6-allowed", "ipv6_allowed", 0},
    {"ipv4-configuration-mode", "ipv4_configuration_mode", XE_COL_RO},
    {"ipv4-addresses", "ipv4_addresses", XE_COL_PLAIN},
    {"ipv4-gateway", "ipv4_gateway", XE_COL_RO},
    {"ipv6-configuration-mode", "ipv6_configuration_mode", XE_COL_RO},
    {"ipv6-addresses", "ipv6_addresses", XE_COL_PLAIN},
    {"ipv6-gateway", "ipv6_gateway", XE_COL_RO},
    {"trunks", "trunks", 0},
};
/* network */
static const xe_col_def network_cols[] = {
    {"uuid", "uuid", 0},
    {"name-label", "name_label", 0},
    {"name-description", "name_description", 0},
    {"VIF-uuids", "VIFs", XE_COL_RO},
    {"PIF-uuids", "PIFs", XE_COL_RO},
    {"MTU", "MTU", 0},
    {"bridge", "bridge", XE_COL_RO},
    {"managed", "managed", XE_COL_RO},
    {"other-config", "other_config", 0},
    {"blobs", "blobs", XE_COL_PLAIN},
    {"tags", "tags", XE_COL_COMMA},
    {"default-locking-mode", "default_locking_mode", 0},
    {"purpose", "purpose", XE_COL_COMMA},
};
/* console */
static const xe_col_def console_cols[] = {
    {"uuid", "uuid", 0},
    {"vm-uuid", "VM", XE_COL_RO},
    {"vm-name-label", "VM>name_label", XE_COL_RO},
    {"protocol", "protocol", XE_COL_RO},
    {"location", "location", XE_COL_RO},
    {"other-config", "other_config", 0},
};
/* host_cpu */
static const xe_col_def hostcpu_cols[] = {
    {"uuid", "uuid", 0},
    {"host-uuid", "host", XE_COL_RO},
    {"number", "number", XE_COL_RO},
    {"vendor", "vendor", XE_COL_RO},
    {"speed", "speed", XE_COL_RO},
    {"model", "model", XE_COL_RO},
    {"family", "family", XE_COL_RO},
    {"modelname", "modelname", XE_COL_RO},
    {"stepping", "stepping", XE_COL_RO},
    {"flags", "flags", XE_COL_RO},
};
/* VDI */
static const xe_col_def vdi_cols[] = {
    {"uuid", "uuid", 0},
    {"name-label", "name_label", 0},
    {"name-description", "name_description", 0},
    {"is-a-snapshot", "is_a_snapshot", XE_COL_RO},
    {"snapshot-of", "snapshot_of", XE_COL_RO},
    {"snapshots", "snapshots", XE_COL_PLAIN},
    {"snapshot-time", "snapshot_time", XE_COL_RO},
    {"allowed-operations", "allowed_operations", XE_COL_RO},
    {"current-operations", "current_operations", XE_COL_VALUES},
    {"sr-uuid", "SR", XE_COL_RO},
    {"sr-name-label", "SR>name_label", XE_COL_RO},
    {"vbd-uuids", "VBDs", XE_COL_RO},
    {"crashdump-uuids", "crash_dumps", XE_COL_RO},
    {"virtual-size", "virtual_size", XE_COL_RO},
    {"physical-utilisation", "physical_utilisation", XE_COL_RO},
    {"location", "location", XE_COL_RO},
    {"type", "type", XE_COL_RO},
    {"sharable", "sharable", XE_COL_RO},
    {"read-only", "read_only", XE_COL_RO},
    {"storage-lock", "storage_lock", XE_COL_RO},
    {"managed", "managed", XE_COL_RO},
    {"parent", "parent", XE_COL_RO | XE_COL_DEPRECATED},
    {"missing", "missing", XE_COL_RO},
    {"is-tools-iso", "is_tools_iso", XE_COL_RO},
    {"other-config", "other_config", 0},
    {"xenstore-data", "xenstore_data", XE_COL_RO},
    {"sm-config", "sm_config", XE_COL_RO},
    {"on-boot", "on_boot", 0},
    {"allow-caching", "allow_caching", 0},
    {"metadata-latest", "metadata_latest", XE_COL_RO},
    {"tags", "tags", XE_COL_COMMA},
    {"cbt-enabled", "cbt_enabled", XE_COL_RO},
};
/* VBD */
static const xe_col_def vbd_cols[] = {
    {"uuid", "uuid", 0},
    {"vm-uuid", "VM", XE_COL_RO},
    {"vm-name-label", "VM>name_label", XE_COL_RO},
    {"vdi-uuid", "VDI", XE_COL_RO},
    {"vdi-name-label", "VDI>name_label", XE_COL_RO},
    {"allowed-operations", "allowed_operations", XE_COL_RO},
    {"current-operations", "current_operations", XE_COL_VALUES},
    {"empty", "empty", XE_COL_RO},
    {"device", "device", XE_COL_RO},
    {"userdevice", "userdevice", 0},
    {"bootable", "bootable", 0},
    {"mode", "mode", 0},
    {"type", "type", 0},
    {"unpluggable", "unpluggable", 0},
    {"currently-attached", "currently_attached", XE_COL_RO},
    {"storage-lock", "storage_lock", XE_COL_RO},
    {"status-code", "status_code", XE_COL_RO},
    {"status-detail", "status_detail", XE_COL_RO},
    {"qos_algorithm_type", "qos_algorithm_type", 0},
    {"qos_algorithm_params", "qos_algorithm_params", 0},
    {"qos_supported_algorithms", "qos_supported_algorithms", XE_COL_RO},
    {"other-config", "other_config", 0},
};
/* SR */
static const xe_col_def sr_cols[] = {
    {"uuid", "uuid", 0},
    {"name-label", "name_label", 0},
    {"name-description", "name_description", 0},
    {"allowed-operations", "allowed_operations", XE_COL_RO},
    {"current-operations", "current_operations", XE_COL_VALUES},
    {"VDIs", "VDIs", XE_COL_RO},
    {"PBDs", "PBDs", XE_COL_RO},
    {"virtual-allocation", "virtual_allocation", XE_COL_RO},
    {"physical-utilisation", "physical_utilisation", XE_COL_RO},
    {"physical-size", "physical_size", XE_COL_RO},
    {"type", "type", XE_COL_RO},
    {"content-type", "content_type", XE_COL_RO},
    {"shared", "shared", 0},
    {"introduced-by", "introduced_by", XE_COL_RO},
    {"is-tools-sr", "is_tools_sr", XE_COL_RO},
    {"other-config", "other_config", 0},
    {"sm-config", "sm_config", XE_COL_RO},
    {"blobs", "blobs", XE_COL_PLAIN},
    {"local-cache-enabled", "local_cache_enabled", XE_COL_RO},
    {"tags", "tags", XE_COL_COMMA},
    {"clustered", "clustered", XE_COL_RO},
};
/* PBD */
static const xe_col_def pbd_cols[] = {
    {"uuid", "uuid", 0},
    {"host", "host", XE_COL_RO | XE_COL_DEPRECATED},
    {"host-uuid", "host", XE_COL_RO},
    {"host-name-label", "host>name_label", XE_COL_RO},
    {"sr-uuid", "SR", XE_COL_RO},
    {"sr-name-label", "SR>name_label", XE_COL_RO},
    {"device-config", "device_config", XE_COL_RO},
    {"currently-attached", "currently_attached", XE_COL_RO},
    {"other-config", "other_config", 0},
};

#define COLS(a)    a, ARRAY_SIZE(a)
#define FILTERS(a) (const xe_kv *)a, ARRAY_SIZE(a)
#define RENAMES(a) (const xe_kv *)a, ARRAY_SIZE(a)
#define NONE       NULL, 0

/* One entry per CLI class; list defaults from XCP's cli_operations.ml gen_cmds. */
const xe_view xe_views[] = {
    {"pool", "pool", "pools",
     STRV("uuid", "name-label", "name-description", "master", "default-SR"), NULL, 0,
     COLS(pool_cols), false, NONE},
    {"host", "host", "hosts", STRV("uuid", "name-label", "name-description"), NULL, 0,
     COLS(host_cols), false, NONE},
    {"host-metrics", "host_metrics", "host-metricss", NULL, NULL, 0, NULL, 0, false, NONE},
    {"host-cpu", "host_cpu", "host-cpus", STRV("uuid", "number", "vendor", "speed", "utilisation"),
     NULL, 0, COLS(hostcpu_cols), false, NONE},
    {"vm", "VM", "vms", STRV("name-label", "uuid", "power-state"), FILTERS(vm_filters),
     COLS(vm_cols), true, NONE},
    {"template", "VM", "templates", STRV("name-label", "name-description", "uuid"),
     FILTERS(template_filters), COLS(vm_cols), false, NONE},
    {"snapshot", "VM", "snapshots",
     STRV("name-label", "name-description", "uuid", "snapshot-of", "snapshot-time"),
     FILTERS(snapshot_filters), COLS(vm_cols), false, NONE},
    {"vm-metrics", "VM_metrics", "vm-metricss", NULL, NULL, 0, NULL, 0, false, NONE},
    {"vm-guest-metrics", "VM_guest_metrics", "vm-guest-metricss", NULL, NULL, 0, NULL, 0, false,
     NONE},
    {"vbd", "VBD", "vbds", STRV("uuid", "vm-uuid", "vm-name-label", "vdi-uuid", "device", "empty"),
     NULL, 0, COLS(vbd_cols), false, NONE},
    {"vdi", "VDI", "vdis",
     STRV("uuid", "name-label", "name-description", "virtual-size", "read-only", "sharable",
          "sr-uuid"),
     NULL, 0, COLS(vdi_cols), false, NONE},
    {"sr", "SR", "srs",
     STRV("uuid", "name-label", "name-description", "host", "type", "content-type"), NULL, 0,
     COLS(sr_cols), true, NONE},
    {"pbd", "PBD", "pbds",
     STRV("uuid", "host-uuid", "sr-uuid", "device-config", "currently-attached"), NULL, 0,
     COLS(pbd_cols), false, NONE},
    {"network", "network", "networks", STRV("uuid", "name-label", "name-description", "bridge"),
     NULL, 0, COLS(network_cols), true, NONE},
    {"pif", "PIF", "pifs",
     STRV("uuid", "device", "VLAN", "MAC", "network-uuid", "currently-attached", "host-uuid"), NULL,
     0, COLS(pif_cols), false, NONE},
    {"vif", "VIF", "vifs", STRV("uuid", "device", "vm-uuid", "network-uuid"), NULL, 0,
     COLS(vif_cols), false, NONE},
    {"task", "task", "tasks", STRV("uuid", "name-label", "name-description", "status", "progress"),
     NULL, 0, COLS(task_cols), false, NONE},
    {"message", "message", "messages", NULL, NULL, 0, COLS(message_cols), false, NONE},
    {"console", "console", "consoles",
     STRV("uuid", "vm-uuid", "vm-name-label", "protocol", "location"), NULL, 0, COLS(console_cols),
     false, NONE},
    {"role", "role", "roles", STRV("uuid", "name", "description", "subroles"), NULL, 0,
     COLS(role_cols), false, NONE},
    {"secret", "secret", "secrets", NULL, NULL, 0, COLS(secret_cols), false, NONE},
};
const size_t xe_nviews = ARRAY_SIZE(xe_views);

const xe_view *xe_view_lookup(const char *cli)
{
    for (size_t i = 0; i < xe_nviews; i++)
        if (strcmp(xe_views[i].cli, cli) == 0)
            return &xe_views[i];
    return NULL;
}

const api_message *xe_find_message(int cls, api_msg_kind k, int fidx)
{
    /* By wire name, so custom messages that act on a field (VM.add_to_platform: the model's
     * "RO/constructor with explicit setters") count like the generated ones. */
    const char *prefix = NULL;
    switch (k) {
    case API_M_SET_FIELD:
        prefix = "set_";
        break;
    case API_M_ADD_TO_MAP:
        prefix = "add_to_";
        break;
    case API_M_REMOVE_FROM_MAP:
        prefix = "remove_from_";
        break;
    case API_M_ADD_SET:
        prefix = "add_";
        break;
    case API_M_REMOVE_SET:
        prefix = "remove_";
        break;
    default:
        break;
    }
    if (prefix && fidx >= 0 && cls >= 0 && (size_t)cls < api_nclasses &&
        (size_t)fidx < api_classes[cls].nfields) {
        AUTOFREE char *wire =
            xasprintf("%s.%s%s", api_classes[cls].name, prefix, api_classes[cls].fields[fidx].name);
        return api_message_lookup(wire);
    }
    for (size_t i = 0; i < api_nmessages; i++) {
        const api_message *m = &api_messages[i];
        if (m->cls == cls && m->kind == k && (fidx < 0 || m->field == fidx))
            return m;
    }
    return NULL;
}

/* XCP tags a column by the operations its record offers: a setter makes a scalar RW,
 * add_to_/add_ messages make a map MRW / a set SRW. */
static void fill_tag(xe_col *c, int cls)
{
    const api_type *t = c->f->type;
    bool ro = c->flags & XE_COL_RO;
    bool can_set = !ro && xe_find_message(cls, API_M_SET_FIELD, c->fidx);
    const char *tag;
    if (c->flags & XE_COL_PLAIN)
        tag = can_set && t->kind != API_T_SET && t->kind != API_T_MAP ? " RW" : " RO";
    else if (t->kind == API_T_MAP && (c->flags & XE_COL_VALUES))
        tag = "SRO";
    else if (t->kind == API_T_SET)
        tag = !ro && xe_find_message(cls, API_M_ADD_SET, c->fidx) ? "SRW" : "SRO";
    else if (t->kind == API_T_MAP)
        tag = !ro && xe_find_message(cls, API_M_ADD_TO_MAP, c->fidx) ? "MRW" : "MRO";
    else
        tag = can_set ? " RW" : " RO";
    memcpy(c->tag, tag, 4);
}

void xe_cols_clear(xe_cols *c)
{
    free(c->c);
    c->c = NULL;
    c->n = 0;
}

void xe_view_columns(const xe_view *v, xe_cols *ret)
{
    const api_class *cls = api_class_by_name(v->cls);
    ret->cls = cls;
    ret->n = 0;
    ret->c = NULL;
    if (!cls)
        return;
    if (v->cols) {
        ret->c = xcalloc(v->ncols, sizeof(xe_col));
        for (size_t i = 0; i < v->ncols; i++) {
            const char *field = v->cols[i].field;
            const char *gt = strchr(field, '>');
            const api_field *via = NULL;
            const api_class *tcls = cls;
            if (gt) {
                AUTOFREE char *rf = xstrndup(field, (size_t)(gt - field));
                int ri = api_field_index(cls, rf);
                if (ri < 0 || cls->fields[ri].type->kind != API_T_REF ||
                    cls->fields[ri].type->cls < 0)
                    continue;
                via = &cls->fields[ri];
                tcls = &api_classes[via->type->cls];
                field = gt + 1;
            }
            int fi = api_field_index(tcls, field);
            if (fi < 0)
                continue; /* not in our schema (yet) */
            xe_col *c = &ret->c[ret->n++];
            c->name = v->cols[i].name;
            c->fidx = fi;
            c->f = &tcls->fields[fi];
            c->flags = v->cols[i].flags | (via ? XE_COL_RO : 0);
            c->via = via;
            c->via_cls = via ? tcls : NULL;
            fill_tag(c, tcls->id);
        }
        return;
    }
    for (size_t k = 0; k < api_cli_nclasses; k++) {
        const api_cli_class *cc = &api_cli_classes[k];
        if (cc->cls != cls->id)
            continue;
        ret->c = xcalloc(cc->nfields, sizeof(xe_col));
        for (size_t i = 0; i < cc->nfields; i++) {
            xe_col *c = &ret->c[ret->n++];
            c->name = cc->fields[i].cli_name;
            for (size_t r = 0; r < v->nrenames; r++)
                if (strcmp(v->renames[r].val, c->name) == 0)
                    c->name = v->renames[r].key;
            c->fidx = cc->fields[i].field;
            c->f = &cls->fields[c->fidx];
            /* XCP shows every class's current-operations as the set of operations */
            c->flags = strcmp(c->f->name, "current_operations") == 0 ? XE_COL_VALUES : 0;
            fill_tag(c, cls->id);
        }
        return;
    }
}

/* XCP's doc sentences and param names for the errors our server raises
 * (ocaml/idl/datamodel_errors.ml). */
static const xe_error_doc error_docs[] = {
    {"SESSION_INVALID",
     "You gave an invalid session reference. It may have been invalidated by a server restart, "
     "or timed out. You should get a new session handle, using one of the session.login_ calls. "
     "This error does not invalidate the current connection. The handle parameter echoes the bad "
     "value given.",
     STRV("handle")},
    {"SESSION_AUTHENTICATION_FAILED",
     "The credentials given by the user are incorrect, so access has been denied, and you have "
     "not been issued a session handle.",
     NULL},
    {"SESSION_NOT_REGISTERED",
     "This session is not registered to receive events. You must call event.register before "
     "event.next. The session handle you are using is echoed.",
     STRV("handle")},
    {"HOST_IS_SLAVE",
     "You cannot make regular API calls directly on a supporter. Please pass API calls via the "
     "coordinator host.",
     STRV("Master IP address")},
    {"HANDLE_INVALID",
     "You gave an invalid object reference. The object may have recently been deleted. The "
     "class parameter gives the type of reference given, and the handle parameter echoes the "
     "bad value given.",
     STRV("class", "handle")},
    {"UUID_INVALID", "The uuid you supplied was invalid.", STRV("type", "uuid")},
    {"MESSAGE_METHOD_UNKNOWN",
     "You tried to call a method that does not exist. The method name that you used is echoed.",
     STRV("method")},
    {"MESSAGE_PARAMETER_COUNT_MISMATCH",
     "You tried to call a method with the incorrect number of parameters. The fully-qualified "
     "method name that you used, and the number of received and expected parameters are "
     "returned.",
     STRV("method", "expected", "received")},
    {"MESSAGE_REMOVED", "This function is no longer available.", NULL},
    {"MESSAGE_DEPRECATED", "This message has been deprecated.", NULL},
    {"FIELD_TYPE_ERROR", "The value specified is of the wrong type", STRV("field")},
    {"MAP_DUPLICATE_KEY",
     "You tried to add a key-value pair to a map, but that key is already there.",
     STRV("type", "param_name", "uuid", "key")},
    {"VALUE_NOT_SUPPORTED",
     "You attempted to set a value that is not supported by this implementation. The "
     "fully-qualified field name and the value that you tried to set are returned. Also "
     "returned is a developer-only diagnostic reason.",
     STRV("field", "value", "reason")},
    {"INVALID_VALUE", "The value given is invalid", STRV("field", "value")},
    {"OPERATION_NOT_ALLOWED", "You attempted an operation that was not allowed.", STRV("reason")},
    {"OTHER_OPERATION_IN_PROGRESS",
     "Another operation involving the object is currently in progress",
     STRV("class", "object", "operation_type", "operation_ref")},
    {"RBAC_PERMISSION_DENIED", "RBAC permission denied.", STRV("permission", "message")},
    {"PERMISSION_DENIED", "Caller not allowed to perform this operation.", STRV("message")},
    {"INTERNAL_ERROR",
     "The server failed to handle your request, due to an internal error. The given message may "
     "give details useful for debugging the problem.",
     STRV("message")},
    {"NOT_IMPLEMENTED", "The function is not implemented", STRV("function")},
    {"EVENTS_LOST", "Some events have been lost from the queue and cannot be retrieved.", NULL},
    {"EVENT_FROM_TOKEN_PARSE_FAILURE",
     "The event.from token could not be parsed. Valid values include: '', and a value returned "
     "from a previous event.from call.",
     STRV("token")},
    {"EVENT_SUBSCRIPTION_PARSE_FAILURE",
     "The server failed to parse your event subscription. Valid values include: *, class-name, "
     "class-name/object-reference.",
     STRV("subscription")},
    {"TASK_CANCELLED", "The request was asynchronously canceled.", STRV("task")},
    {"CHANGE_PASSWORD_REJECTED",
     "The system rejected the password change request; perhaps the new password was too short?",
     STRV("msg")},
    {"USER_IS_NOT_LOCAL_SUPERUSER", "Only the local superuser can perform this operation.",
     STRV("msg")},
    {"DB_UNIQUENESS_CONSTRAINT_VIOLATION",
     "You attempted an operation which would have resulted in duplicate keys in the database.",
     STRV("table", "field", "value")},
    {"VM_BAD_POWER_STATE",
     "You attempted an operation on a VM that was not in an appropriate power state at the "
     "time; for example, you attempted to start a VM that was already running. The parameters "
     "returned are the VM's handle, and the expected and actual VM state at the time of the "
     "call.",
     STRV("vm", "expected", "actual")},
    {"VM_IS_TEMPLATE", "The operation attempted is not valid for a template VM", STRV("vm")},
};

const xe_error_doc *xe_error_doc_lookup(const char *code)
{
    for (size_t i = 0; i < ARRAY_SIZE(error_docs); i++)
        if (strcmp(error_docs[i].code, code) == 0)
            return &error_docs[i];
    return NULL;
}
