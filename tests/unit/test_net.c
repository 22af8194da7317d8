/* network/: the pure parts — names, MACs, netmasks, QoS parameters, locking scripts, errors. */
#include "net.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static void test_ifname(void **state)
{
    assert_true(net_ifname_valid("xenbr0"));
    assert_true(net_ifname_valid("vif12.3"));
    assert_true(net_ifname_valid("a_b-c"));
    assert_true(net_ifname_valid("abcdefghijklmno")); /* 15 */
    assert_false(net_ifname_valid("abcdefghijklmnop"));
    assert_false(net_ifname_valid(""));
    assert_false(net_ifname_valid(NULL));
    assert_false(net_ifname_valid("."));
    assert_false(net_ifname_valid(".."));
    assert_false(net_ifname_valid("a b"));
    assert_false(net_ifname_valid("a;b"));
    assert_false(net_ifname_valid("a/b"));
    assert_false(net_ifname_valid("x\"y"));
}

static void test_bridge_names(void **state)
{
    char out[NET_NAME_MAX];
    assert_int_equal(net_pif_bridge_name("eth0", out), 0);
    assert_string_equal(out, "xenbr0");
    assert_int_equal(net_pif_bridge_name("eth12", out), 0);
    assert_string_equal(out, "xenbr12");
    assert_int_equal(net_pif_bridge_name("enp3s0", out), 0);
    assert_string_equal(out, "brenp3s0");
    assert_int_equal(net_pif_bridge_name("eth", out), 0);
    assert_string_equal(out, "breth");
    assert_int_equal(net_pif_bridge_name("ethx", out), 0);
    assert_string_equal(out, "brethx");
    assert_int_equal(net_pif_bridge_name("enp123s0f1np10", out), -ENAMETOOLONG);
    assert_int_equal(net_pif_bridge_name("a b", out), -EINVAL);

    assert_int_equal(net_bridge_name_check_user("mybr"), 0);
    assert_int_equal(net_bridge_name_check_user("xenbr7"), -EINVAL);
    assert_int_equal(net_bridge_name_check_user("xapi1"), -EINVAL);
    assert_int_equal(net_bridge_name_check_user("vif1.0"), -EINVAL);
    assert_int_equal(net_bridge_name_check_user("tap0"), -EINVAL);
    assert_int_equal(net_bridge_name_check_user("eth0"), -EINVAL);
    assert_int_equal(net_bridge_name_check_user("sixteen-chars-xx"), -ENAMETOOLONG);
    assert_int_equal(net_bridge_name_check_user("bad;name"), -EINVAL);
    assert_int_equal(net_bridge_name_check_user(""), -EINVAL);

    assert_int_equal(net_vif_name(3, 0, out), 0);
    assert_string_equal(out, "vif3.0");
    assert_int_equal(net_vif_name(32767, 6, out), 0);
    assert_string_equal(out, "vif32767.6");
    assert_int_equal(net_vif_name(-1, 0, out), -EINVAL);
    assert_int_equal(net_vif_name(1234567890, 1234, out), -ENAMETOOLONG);

    /* Without a context only the DB's names count. */
    const char *taken[] = {"xapi0", "xapi1", "xapi3"};
    assert_int_equal(net_bridge_pick_internal(NULL, taken, 3, out), 0);
    assert_string_equal(out, "xapi2");
    assert_int_equal(net_bridge_pick_internal(NULL, NULL, 0, out), 0);
    assert_string_equal(out, "xapi0");
}

static void test_mac(void **state)
{
    uint8_t m[6];
    char s[18];
    assert_int_equal(net_mac_parse("02:AB:cd:00:11:ff", m), 0);
    net_mac_format(m, s);
    assert_string_equal(s, "02:ab:cd:00:11:ff");
    assert_int_equal(net_mac_parse("02:ab:cd:00:11", m), -EINVAL);
    assert_int_equal(net_mac_parse("02:ab:cd:00:11:fg", m), -EINVAL);
    assert_int_equal(net_mac_parse("02-ab-cd-00-11-ff", m), -EINVAL);
    assert_int_equal(net_mac_parse("02:ab:cd:00:11:ff0", m), -EINVAL);
    assert_int_equal(net_mac_parse(NULL, m), -EINVAL);
    for (int i = 0; i < 100; i++) {
        net_mac_random(m);
        assert_int_equal(m[0] & 0x03, 0x02); /* unicast, locally administered */
    }
}

static void test_netmask(void **state)
{
    assert_int_equal(net_netmask_to_prefix("255.255.255.0"), 24);
    assert_int_equal(net_netmask_to_prefix("255.255.255.255"), 32);
    assert_int_equal(net_netmask_to_prefix("0.0.0.0"), 0);
    assert_int_equal(net_netmask_to_prefix("255.255.240.0"), 20);
    assert_int_equal(net_netmask_to_prefix("255.0.255.0"), -EINVAL);
    assert_int_equal(net_netmask_to_prefix("255.255.255"), -EINVAL);
    assert_int_equal(net_netmask_to_prefix("24"), -EINVAL);
    assert_int_equal(net_netmask_to_prefix(NULL), -EINVAL);
}

static void test_qos_parse(void **state)
{
    uint64_t k = 99;
    assert_int_equal(net_qos_parse("", NULL, &k), 0);
    assert_int_equal(k, 0);
    assert_int_equal(net_qos_parse("ratelimit", "1000", &k), 0);
    assert_int_equal(k, 1000);
    assert_int_equal(net_qos_parse("ratelimit", "0", &k), -EINVAL);
    assert_int_equal(net_qos_parse("ratelimit", "-5", &k), -EINVAL);
    assert_int_equal(net_qos_parse("ratelimit", "12kb", &k), -EINVAL);
    assert_int_equal(net_qos_parse("ratelimit", "", &k), -EINVAL);
    assert_int_equal(net_qos_parse("ratelimit", NULL, &k), -EINVAL);
    assert_int_equal(net_qos_parse("ratelimit", "99999999999", &k), -EINVAL);
    assert_int_equal(net_qos_parse("fairshare", "100", &k), -EINVAL);
}

static void test_lock_mode_parse(void **state)
{
    enum net_lock_mode m;
    assert_int_equal(net_lock_mode_parse("network_default", &m), 0);
    assert_int_equal(m, NET_LOCK_NETWORK_DEFAULT);
    assert_int_equal(net_lock_mode_parse("locked", &m), 0);
    assert_int_equal(m, NET_LOCK_LOCKED);
    assert_int_equal(net_lock_mode_parse("unlocked", &m), 0);
    assert_int_equal(m, NET_LOCK_UNLOCKED);
    assert_int_equal(net_lock_mode_parse("disabled", &m), 0);
    assert_int_equal(m, NET_LOCK_DISABLED);
    assert_int_equal(net_lock_mode_parse("Locked", &m), -EINVAL);
    assert_int_equal(net_lock_mode_parse(NULL, &m), -EINVAL);
}

static void test_lock_script(void **state)
{
    const char *v4[] = {"10.0.0.5", "10.1.0.0/16"};
    const char *v6[] = {"2001:db8::5"};
    struct net_lock l = {.mode = NET_LOCK_LOCKED,
                         .mac = {0x02, 0, 0, 0, 0, 0x01},
                         .ipv4 = v4,
                         .n_ipv4 = 2,
                         .ipv6 = v6,
                         .n_ipv6 = 1};
    char *s = NULL;
    assert_int_equal(net_lock_script("vif1.0", &l, &s), 0);
    assert_non_null(strstr(s, "add element bridge nuvem vif_in { \"vif1.0\" : jump in-vif1.0 }"));
    assert_non_null(strstr(s, "in-vif1.0 ether saddr != 02:00:00:00:00:01 drop"));
    assert_non_null(strstr(s, "ip saddr { 10.0.0.5, 10.1.0.0/16 } accept"));
    assert_non_null(strstr(s, "ip6 saddr { 2001:db8::5 } accept"));
    assert_non_null(strstr(s, "add rule bridge nuvem in-vif1.0 drop\n"));
    assert_null(strstr(s, "out-vif1.0 drop"));
    free(s);

    /* Locked without addresses: only the drop (and DHCP/ARP probe) rules. */
    l.n_ipv4 = l.n_ipv6 = 0;
    assert_int_equal(net_lock_script("vif1.0", &l, &s), 0);
    assert_null(strstr(s, "ip saddr {"));
    free(s);

    l.mode = NET_LOCK_DISABLED;
    assert_int_equal(net_lock_script("vif1.0", &l, &s), 0);
    assert_non_null(strstr(s, "add rule bridge nuvem in-vif1.0 drop"));
    assert_non_null(strstr(s, "add rule bridge nuvem out-vif1.0 drop"));
    free(s);

    l.mode = NET_LOCK_UNLOCKED;
    assert_int_equal(net_lock_script("vif1.0", &l, &s), 0);
    assert_null(strstr(s, "add rule bridge nuvem in-vif1.0"));
    free(s);

    /* network_default follows the network's default_locking_mode. */
    l.mode = NET_LOCK_NETWORK_DEFAULT;
    l.network_default = NET_LOCK_DISABLED;
    assert_int_equal(net_lock_script("vif1.0", &l, &s), 0);
    assert_non_null(strstr(s, "out-vif1.0 drop"));
    free(s);
    l.network_default = NET_LOCK_UNLOCKED;
    assert_int_equal(net_lock_script("vif1.0", &l, &s), 0);
    assert_null(strstr(s, "out-vif1.0 drop"));
    free(s);

    /* Nothing from a client reaches nft unchecked. */
    l.mode = NET_LOCK_LOCKED;
    const char *bad4[][1] = {{"10.0.0.5; flush ruleset"},
                             {"10.0.0.256"},
                             {"10.0.0.0/33"},
                             {"2001:db8::1"},
                             {""},
                             {"10.0.0.1/"}};
    for (size_t i = 0; i < sizeof(bad4) / sizeof(bad4[0]); i++) {
        l.ipv4 = bad4[i];
        l.n_ipv4 = 1;
        s = NULL;
        assert_int_equal(net_lock_script("vif1.0", &l, &s), -EINVAL);
        assert_null(s);
    }
    l.n_ipv4 = 0;
    const char *bad6[] = {"10.0.0.1"};
    l.ipv6 = bad6;
    l.n_ipv6 = 1;
    assert_int_equal(net_lock_script("vif1.0", &l, &s), -EINVAL);
    l.n_ipv6 = 0;
    assert_int_equal(net_lock_script("vif1.0\"; flush ruleset", &l, &s), -EINVAL);
    assert_int_equal(net_lock_script("vif1.0", NULL, &s), -EINVAL);
}

static void test_xerr(void **state)
{
    assert_null(net_xerr(0, "x", "y"));
    struct {
        int rc;
        const char *code;
    } cases[] = {{-ENODEV, "INTERNAL_ERROR"},      {-EEXIST, "BRIDGE_NAME_EXISTS"},
                 {-EINVAL, "INVALID_VALUE"},       {-EBUSY, "DEVICE_ALREADY_ATTACHED"},
                 {-EOPNOTSUPP, "NOT_IMPLEMENTED"}, {-EIO, "INTERNAL_ERROR"}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        xerr *e = net_xerr(cases[i].rc, "op", "eth9");
        assert_non_null(e);
        assert_string_equal(e->code, cases[i].code);
        xerr_free(e);
    }
    xerr *e = net_xerr(-EEXIST, "network.create", "xenbr0");
    assert_int_equal(e->nparams, 1);
    assert_string_equal(e->params[0], "xenbr0");
    xerr_free(e);
    e = net_xerr(-EINVAL, "MTU", "70000");
    assert_int_equal(e->nparams, 2);
    assert_string_equal(e->params[0], "MTU");
    assert_string_equal(e->params[1], "70000");
    xerr_free(e);
    e = net_xerr(-ENODEV, "PIF.plug", "eth9");
    assert_int_equal(e->nparams, 1);
    assert_non_null(strstr(e->params[0], "eth9"));
    xerr_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ifname),      cmocka_unit_test(test_bridge_names),
        cmocka_unit_test(test_mac),         cmocka_unit_test(test_netmask),
        cmocka_unit_test(test_qos_parse),   cmocka_unit_test(test_lock_mode_parse),
        cmocka_unit_test(test_lock_script), cmocka_unit_test(test_xerr),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
