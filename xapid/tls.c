/* A self-signed certificate for the HTTPS listener, made with OpenSSL on first start. */
#define _GNU_SOURCE
#include "xapid.h"
#include "log.h"
#include "mem.h"

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

static int add_ext(X509 *cert, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, cert, cert, NULL, NULL, 0);
    X509_EXTENSION *ex = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (!ex)
        return -1;
    X509_add_ext(cert, ex, -1);
    X509_EXTENSION_free(ex);
    return 0;
}

int tls_ensure_cert(const char *cert_path, const char *key_path, const char *hostname)
{
    if (access(cert_path, R_OK) == 0 && access(key_path, R_OK) == 0)
        return 0;
    int rc = -1;
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *cert = X509_new();
    FILE *f = NULL;
    AUTOFREE char *san = xasprintf("DNS:%s,DNS:localhost,IP:127.0.0.1", hostname);
    if (!key || !cert)
        goto out;
    ASN1_INTEGER_set(X509_get_serialNumber(cert), (long)time(NULL));
    X509_set_version(cert, 2);
    X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
    X509_gmtime_adj(X509_getm_notAfter(cert), 10L * 365 * 24 * 3600);
    X509_set_pubkey(cert, key);
    X509_NAME *name = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"Nuvem", -1, -1, 0);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)hostname, -1, -1,
                               0);
    X509_set_issuer_name(cert, name);
    if (add_ext(cert, NID_subject_alt_name, san) < 0 ||
        add_ext(cert, NID_basic_constraints, "critical,CA:FALSE") < 0)
        goto out;
    if (!X509_sign(cert, key, EVP_sha256()))
        goto out;
    mode_t old = umask(077);
    f = fopen(key_path, "we");
    umask(old);
    if (!f || !PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL))
        goto out;
    fclose(f);
    f = fopen(cert_path, "we");
    if (!f || !PEM_write_X509(f, cert))
        goto out;
    log_info("generated a self-signed certificate %s", cert_path);
    rc = 0;
out:
    if (f)
        fclose(f);
    X509_free(cert);
    EVP_PKEY_free(key);
    if (rc < 0)
        log_err("cannot create the TLS certificate");
    return rc;
}
