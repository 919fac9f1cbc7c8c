/* dkim_sign_tool.c — a check program that lets tests written in Python drive kiln's DKIM code
 * (mta/dkim.h) on files, so that verifiers we did not write (dkimpy, OpenDKIM) judge its
 * output:
 *
 *   dkim_sign_tool genkey rsa|ed25519 PATH   a new key written to PATH (PKCS#8, 0600);
 *                                            prints its TXT record
 *   dkim_sign_tool txt KEYFILE               prints the TXT record of a key file
 *   dkim_sign_tool sign [-t NOW] -k KEYFILE -d DOMAIN -s SELECTOR [-k .. -d .. -s ..]...
 *                  MESSAGEFILE               prints the signed message as the receiver gets
 *                                            it: the DKIM-Signature fields, then the message
 *                                            through smtp_client_encode_data (the DATA
 *                                            encoder kiln sends with) with the dot-stuffing
 *                                            and the final "." undone
 *
 * Errors (a key kiln refuses, a message it cannot sign) go to stderr, exit status 1. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "mta/dkim.h"
#include "mta/smtp_client.h"

#define TOOL_MAX_SIGNERS 4

static int tool_usage(void)
{
    fprintf(stderr, "usage: dkim_sign_tool genkey rsa|ed25519 PATH\n"
                    "       dkim_sign_tool txt KEYFILE\n"
                    "       dkim_sign_tool sign [-t NOW] -k KEY -d DOMAIN -s SELECTOR [...] MESSAGE\n");
    return 2;
}

static int tool_fail(char *err)
{
    fprintf(stderr, "%s\n", err);
    free(err);
    return 1;
}

static int tool_genkey(const char *type, const char *path)
{
    char *err = NULL;
    dkim_alg alg;
    if (strcmp(type, "rsa") == 0) alg = DKIM_ALG_RSA_SHA256;
    else if (strcmp(type, "ed25519") == 0) alg = DKIM_ALG_ED25519_SHA256;
    else return tool_usage();
    dkim_key *k = dkim_key_generate(alg, &err);
    if (!k) return tool_fail(err);
    if (dkim_key_write_pem(k, path, &err) != 0) {
        dkim_key_free(k);
        return tool_fail(err);
    }
    char *txt = dkim_key_txt_record(k);
    printf("%s\n", txt);
    free(txt);
    dkim_key_free(k);
    return 0;
}

static int tool_txt(const char *path)
{
    char *err = NULL;
    dkim_key *k = dkim_key_load_file(path, &err);
    if (!k) return tool_fail(err);
    char *txt = dkim_key_txt_record(k);
    printf("%s\n", txt);
    free(txt);
    dkim_key_free(k);
    return 0;
}

static char *tool_read(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    strbuf sb;
    strbuf_init(&sb);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) strbuf_append(&sb, buf, n);
    fclose(f);
    *len = sb.len;
    return strbuf_steal(&sb);
}

/* The wire form (smtp_client_encode_data) read back as a receiver does: the final ".\r\n"
 * dropped and a leading '.' removed from each line that has one. */
static void tool_write_as_received(const char *msg, size_t len)
{
    strbuf wire;
    strbuf_init(&wire);
    smtp_client_encode_data(msg, len, &wire);
    size_t end = wire.len - 3;   /* ".\r\n" */
    size_t i = 0;
    while (i < end) {
        if (wire.buf[i] == '.') i++;
        const char *nl = memchr(wire.buf + i, '\n', end - i);
        size_t stop = nl ? (size_t)(nl - wire.buf) + 1 : end;
        fwrite(wire.buf + i, 1, stop - i, stdout);
        i = stop;
    }
    strbuf_free(&wire);
}

static int tool_sign(int argc, char **argv)
{
    dkim_key *keys[TOOL_MAX_SIGNERS] = {0};
    dkim_signer signers[TOOL_MAX_SIGNERS];
    size_t n = 0;
    long long now = 1700000000;
    const char *msgpath = NULL;
    int rc = 1;
    char *err = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "-t") == 0 && i + 1 < argc) {
            if (!util_parse_ll(argv[++i], 0, 1LL << 40, &now)) return tool_usage();
        } else if (strcmp(argv[i], "-k") == 0 && i + 5 < argc && n < TOOL_MAX_SIGNERS &&
                   strcmp(argv[i + 2], "-d") == 0 && strcmp(argv[i + 4], "-s") == 0) {
            keys[n] = dkim_key_load_file(argv[i + 1], &err);
            if (!keys[n]) goto out;
            signers[n] = (dkim_signer){.domain = argv[i + 3], .selector = argv[i + 5], .key = keys[n]};
            n++;
            i += 5;
        } else if (i + 1 == argc && argv[i][0] != '-') {
            msgpath = argv[i];
        } else {
            rc = tool_usage();
            goto out;
        }
    }
    if (!msgpath || n == 0) {
        rc = tool_usage();
        goto out;
    }
    size_t len = 0;
    char *msg = tool_read(msgpath, &len);
    if (!msg) {
        err = util_asprintf("cannot read %s", msgpath);
        goto out;
    }
    char *sigs = dkim_sign(signers, n, msg, len, (int64_t)now, &err);
    if (sigs) {
        fputs(sigs, stdout);
        tool_write_as_received(msg, len);
        free(sigs);
        rc = 0;
    }
    free(msg);
out:
    if (err) rc = tool_fail(err);
    for (size_t i = 0; i < n; i++) dkim_key_free(keys[i]);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "genkey") == 0) return tool_genkey(argv[2], argv[3]);
    if (argc == 3 && strcmp(argv[1], "txt") == 0) return tool_txt(argv[2]);
    if (argc >= 2 && strcmp(argv[1], "sign") == 0) return tool_sign(argc - 2, argv + 2);
    return tool_usage();
}
