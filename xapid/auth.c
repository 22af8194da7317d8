/* Local users: salted PBKDF2-HMAC-SHA256 password hashes kept in the pool DB. */
#define _GNU_SOURCE
#include "xapid.h"
#include "db.h"
#include "log.h"
#include "mem.h"

#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SALT_LEN 16
#define HASH_LEN 32

static xerr *create_table(store_txn *t, void *ud)
{
    int r = db_exec(st_db(t),
                    "CREATE TABLE IF NOT EXISTS _users (name TEXT PRIMARY KEY, hash TEXT NOT NULL, "
                    "role TEXT NOT NULL)",
                    NULL, 0);
    return r < 0 ? xerr_internal("cannot create the users table") : NULL;
}

int auth_init(xapid *x)
{
    xerr *e = store_write(x->st, create_table, NULL);
    if (e) {
        xerr_free(e);
        return -1;
    }
    return 0;
}

static char *b64(const unsigned char *d, size_t n)
{
    char *out = xmalloc(4 * ((n + 2) / 3) + 1);
    EVP_EncodeBlock((unsigned char *)out, d, (int)n);
    return out;
}

/* Decodes base64 into out (at most cap bytes); returns the length or -1. */
static int unb64(const char *s, unsigned char *out, size_t cap)
{
    size_t n = strlen(s);
    if (n % 4 || n / 4 * 3 > cap + 2)
        return -1;
    unsigned char tmp[256];
    if (n / 4 * 3 > sizeof(tmp))
        return -1;
    int len = EVP_DecodeBlock(tmp, (const unsigned char *)s, (int)n);
    if (len < 0)
        return -1;
    while (n && s[n - 1] == '=') {
        len--;
        n--;
    }
    if ((size_t)len > cap)
        return -1;
    memcpy(out, tmp, (size_t)len);
    return len;
}

char *auth_hash_password(const char *password, int64_t iterations)
{
    unsigned char salt[SALT_LEN], hash[HASH_LEN];
    if (RAND_bytes(salt, sizeof(salt)) != 1)
        abort();
    PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, sizeof(salt), (int)iterations,
                      EVP_sha256(), sizeof(hash), hash);
    AUTOFREE char *s = b64(salt, sizeof(salt));
    AUTOFREE char *h = b64(hash, sizeof(hash));
    OPENSSL_cleanse(hash, sizeof(hash));
    return xasprintf("$pbkdf2-sha256$%" PRId64 "$%s$%s", iterations, s, h);
}

bool auth_check_hash(const char *encoded, const char *password)
{
    char salt_s[64], hash_s[64];
    long long iter;
    if (sscanf(encoded, "$pbkdf2-sha256$%lld$%63[^$]$%63s", &iter, salt_s, hash_s) != 3 ||
        iter < 1 || iter > 100000000)
        return false;
    unsigned char salt[48], want[48], got[HASH_LEN];
    int sl = unb64(salt_s, salt, sizeof(salt)), hl = unb64(hash_s, want, sizeof(want));
    if (sl <= 0 || hl != HASH_LEN)
        return false;
    PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, sl, (int)iter, EVP_sha256(),
                      sizeof(got), got);
    bool ok = CRYPTO_memcmp(got, want, HASH_LEN) == 0;
    OPENSSL_cleanse(got, sizeof(got));
    return ok;
}

struct user_ud {
    const char *name;
    char *hash;
    char *role;
};

static int user_row(void *ud, const db_row *row)
{
    struct user_ud *u = ud;
    u->hash = xstrdup(db_row_text(row, 0, NULL));
    u->role = xstrdup(db_row_text(row, 1, NULL));
    return 1;
}

static xerr *read_user(store_txn *t, void *ud)
{
    struct user_ud *u = ud;
    AUTO(xv) *n = xv_new_string(u->name);
    const xv *a[] = {n};
    db_query(st_db(t), "SELECT hash, role FROM _users WHERE name = ?", a, 1, user_row, u);
    return NULL;
}

int auth_verify(xapid *x, const char *user, const char *password)
{
    struct user_ud u = {user, NULL, NULL};
    xerr_free(store_read(x->st, read_user, &u));
    int rank = -1;
    /* the slow hash runs outside the DB lock */
    if (u.hash && auth_check_hash(u.hash, password))
        rank = api_role_rank(u.role);
    free(u.hash);
    free(u.role);
    return rank;
}

struct set_ud {
    const char *name, *hash, *role;
};

static xerr *write_user(store_txn *t, void *ud)
{
    struct set_ud *s = ud;
    AUTO(xv) *n = xv_new_string(s->name);
    AUTO(xv) *h = xv_new_string(s->hash);
    AUTO(xv) *r = s->role ? xv_new_string(s->role) : NULL;
    int rc;
    if (s->role) {
        const xv *a[] = {n, h, r};
        rc = db_exec(st_db(t), "INSERT OR REPLACE INTO _users (name, hash, role) VALUES (?, ?, ?)",
                     a, 3);
    } else {
        const xv *a[] = {h, n};
        rc = db_exec(st_db(t), "UPDATE _users SET hash = ? WHERE name = ?", a, 2);
    }
    return rc < 0 ? xerr_internal("cannot store the user") : NULL;
}

int auth_set_password(xapid *x, const char *user, const char *password, const char *role)
{
    if (role && api_role_rank(role) < 0)
        return -1;
    AUTOFREE char *hash = auth_hash_password(password, x->cfg.password_iterations);
    struct set_ud s = {user, hash, role};
    xerr *e = store_write(x->st, write_user, &s);
    if (e) {
        xerr_free(e);
        return -1;
    }
    return 0;
}
