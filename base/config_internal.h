/* config_internal.h — what base/config*.c share and nothing else includes: units, the value
 * checks and formatters of config_value.c, the YAML walker of config_yaml.c (its parse state,
 * key paths, errors and typed node readers), and the bits of config.c and config_query.c
 * that the other one needs. The public API is config.h. */
#ifndef KILN_CONFIG_INTERNAL_H
#define KILN_CONFIG_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <yaml.h>

#include "base/config.h"
#include "base/util.h"

#define KB ((int64_t)1 << 10)
#define MS_SECOND ((int64_t)1000)
#define MS_MINUTE (60 * MS_SECOND)
#define MS_HOUR (60 * MS_MINUTE)
#define MS_DAY (24 * MS_HOUR)

/* ---- config_value.c: checks and formatters beyond the parsers config.h exports ---- */

/* Whole decimal number with optional leading '-'; nothing else. 0, or -1. */
int config_parse_int(const char *s, int64_t *out);
/* Decimal number "-?D+(.D+)?" (no exponent, no inf/nan, no hex). 0, or -1. */
int config_parse_decimal(const char *s, double *out);
/* strict: host bits beyond the prefix make the network invalid; otherwise they are cleared. */
int config_cidr_parse(const char *s, config_cidr *c, bool strict);
bool config_cidr_match(const config_cidr *c, int family, const unsigned char *addr);
void config_cidr_to_text(const config_cidr *c, strbuf *sb);

bool config_is_ip(const char *s);            /* an IPv4 or IPv6 literal */
bool config_valid_hostname(const char *s);   /* a DNS name (not a broken dotted quad) */
bool config_valid_next_hop(const char *s);   /* an IP literal or a DNS name */
bool config_valid_name(const char *s);       /* zone, pool, set, provider: [A-Za-z0-9_-]{1,64} */
/* server.user / server.group: a POSIX account name [A-Za-z0-9._-]{1,32}, not starting with
 * '-' (config_security.c) */
bool config_valid_account(const char *s);
#define WHAT_ACCOUNT "a user or group name ([A-Za-z0-9._-], up to 32 characters)"
/* The exposure warning of every load (config_security.c): trusted_networks that trust the
 * whole internet (0.0.0.0/0 or ::/0). File modes are config_file_warnings' (config.h). */
void config_add_security_warnings(config *c);
bool config_valid_identity(const char *s);   /* a domain or an address */
bool config_valid_crypt_hash(const char *s); /* the "$id$rest" shape only */
bool config_valid_user(const char *s);       /* no blanks, at most 255 bytes */

/* The notation of the file: 90s -> "90s", 14 * 3600000 -> "14h", 10 << 20 -> "10MB". */
void config_fmt_duration(strbuf *sb, int64_t ms);
void config_fmt_size(strbuf *sb, int64_t b);
void config_fmt_rate(strbuf *sb, const config_rate *r);
void config_fmt_hostport(strbuf *sb, const char *host, int port);
void config_fmt_list(strbuf *sb, char *const *names, size_t n);

/* ---- config_yaml.c: the walker ---- */

typedef struct config_parser {
    const char *file;        /* as given, for messages */
    yaml_document_t *doc;
    config *cfg;
    strbuf path;             /* key path of the node being read */
    char *err;               /* first error */
    config_hash_check *hash_usable;  /* the caller's password hash check, or NULL */
} config_parser;

#define LINE(n) ((int)(n)->start_mark.line + 1)

/* Reads the one YAML document of F (opened from PATH) into *DOC: 0, or -1 and *err
 * ("FILE:LINE: YAML syntax error: ..."; a second document is an error too). */
int config_yaml_read(const char *path, FILE *f, yaml_document_t *doc, char **err);
/* The same for LEN bytes of YAML TEXT held in memory; NAME stands for the file in errors. */
int config_yaml_read_text(const char *name, const char *text, size_t len, yaml_document_t *doc,
                          char **err);

/* Record "FILE:LINE: KEY.PATH: message" unless an error is recorded already; return -1. */
__attribute__((format(printf, 3, 4)))
int config_fail_at(config_parser *p, int line, const char *fmt, ...);
__attribute__((format(printf, 3, 4)))
int config_fail(config_parser *p, const yaml_node_t *n, const char *fmt, ...);
/* Error for a required KEY missing from the map reported at LINE. */
int config_missing(config_parser *p, int line, const char *key, const char *hint);
int config_line_of(yaml_node_t *n, int fallback);    /* N's line, or FALLBACK for no node */

/* The key path: push returns a mark that pop goes back to. */
size_t config_push_key(config_parser *p, const char *key);
size_t config_push_index(config_parser *p, size_t i);
void config_pop(config_parser *p, size_t mark);

const char *config_sval(const yaml_node_t *n);       /* a scalar's text */
bool config_is_null(const yaml_node_t *n);           /* "", ~, null (plain) */
const char *config_kind(const yaml_node_t *n);       /* "a map", "a list", ... for messages */
/* The value of KEY in MAP (NULL map or key absent: NULL); *keyn gets the key node. */
yaml_node_t *config_lookup(config_parser *p, yaml_node_t *map, const char *key,
                           yaml_node_t **keyn);
/* Every key of MAP is a name listed in ALLOWED (NULL-terminated), and none repeats. */
int config_check_keys(config_parser *p, yaml_node_t *map, const char *const *allowed);
/* 1: V is a map (with its keys checked when ALLOWED); 0: V is empty (treated as {}); -1. */
int config_as_map(config_parser *p, yaml_node_t *v, const char *const *allowed);
/* Number of items of list V (empty value: 0 items), or -1. */
int config_as_list(config_parser *p, yaml_node_t *v, size_t *n);
yaml_node_t *config_item(config_parser *p, yaml_node_t *list, size_t i);

/* Typed readers: 0 and *out set, or -1 with the error recorded. */
int config_as_scalar(config_parser *p, yaml_node_t *v, const char *what, const char **s);
/* Copy of a text value, checked by OK (NULL: any text). */
int config_as_str(config_parser *p, yaml_node_t *v, bool (*ok)(const char *), const char *what,
                  char **out);
int config_as_path(config_parser *p, yaml_node_t *v, char **out);   /* resolved, absolute */
/* Whole number in [min, max]; RANGE describes the range for the message (NULL: generated). */
int config_as_int(config_parser *p, yaml_node_t *v, int64_t min, int64_t max, const char *range,
                  int64_t *out);
int config_as_int32(config_parser *p, yaml_node_t *v, int min, int max, const char *range,
                    int *out);
int config_as_decimal(config_parser *p, yaml_node_t *v, double *out);
int config_as_size(config_parser *p, yaml_node_t *v, int64_t *out);
/* Duration; POSITIVE: zero is rejected. */
int config_as_duration(config_parser *p, yaml_node_t *v, bool positive, int64_t *out);
int config_as_rate(config_parser *p, yaml_node_t *v, config_rate *out);
/* Index of V in NAMES (NULL-terminated). */
int config_as_enum(config_parser *p, yaml_node_t *v, const char *const *names, int *out);
/* A list of names (zones, mx_suffix...) into a fresh char* array. CHECK validates each;
 * LOWER lower-cases; UNIQUE rejects repeats. */
int config_as_strv(config_parser *p, yaml_node_t *v, bool (*check)(const char *),
                   const char *what, bool lower, bool unique, char ***out, size_t *nout);

/* Runs BODY (an int expression, -1 on error) with V bound to MAP's value for KEY and the key
 * path extended by KEY; skipped when the key is absent. Returns -1 from the caller on error. */
#define FIELD(map, key, v, body)                                                              \
    do {                                                                                      \
        yaml_node_t *v = config_lookup(p, (map), (key), NULL);                                \
        if (v) {                                                                              \
            size_t mark_ = config_push_key(p, (key));                                         \
            if ((body) < 0) return -1;                                                        \
            config_pop(p, mark_);                                                             \
        }                                                                                     \
    } while (0)

/* ---- config_identity.c ---- */
/* account.identities: strings or {identity, dkim, mail_from} maps. */
int config_read_identities(config_parser *p, yaml_node_t *v);
void config_identity_clear(config_identity *id);

/* ---- config.c ---- */

extern const char *const config_mode_names[];      /* by config_mode */
extern const char *const config_scaling_names[];   /* by config_scaling */
extern const char *const config_tls_names[];       /* by config_tls_policy */
extern const char *const config_advance_names[];   /* by config_advance */
int config_pool_index(const config *c, const char *name);   /* index in c->pools, or -1 */

/* A list of HOST:PORT (submission.listen, api.listen) into *out; NEED_ONE: an empty list is
 * an error; EXAMPLE_PORT is the port shown in error examples. */
int config_read_hostports(config_parser *p, yaml_node_t *v, bool need_one, int example_port,
                          config_hostport **out, size_t *nout);
/* A path (resolved) to a regular file this process can read. */
int config_read_readable_file(config_parser *p, yaml_node_t *v, char **path);

/* ---- config_tls.c ---- */

/* Outbound TLS keys of delivery (tls_ca_file, mta_sts) and their defaults. */
void config_tls_defaults(config *c);
int config_read_delivery_tls(config_parser *p, yaml_node_t *delivery);

/* ---- config_auth.c ---- */

/* After account and configuration_sets are read: submission.auth scopes name verified
 * identities and existing sets. 0, or -1 with the error recorded. */
int config_check_auth_scope(config_parser *p, yaml_node_t *root);
/* The scope keys (identities, configuration_sets) of the entry map IT into A; and, once
 * account and configuration_sets are read, their cross-checks, with the key path at IT.
 * Shared by submission.auth and api.access_keys. 0, or -1 with the error recorded. */
int config_read_scope(config_parser *p, yaml_node_t *it, config_auth_user *a);
int config_check_scope(config_parser *p, yaml_node_t *it, const config_auth_user *a);
/* Frees what a scope holds (user, hash, lists) and zeroes it. */
void config_scope_clear(config_auth_user *a);

/* ---- config_api.c ---- */

/* The api section's defaults; its reader (after submission.auth, account.identities and
 * configuration_sets, whose names it checks against); what it allocated. */
void config_api_defaults(config *c);
int config_read_api(config_parser *p, yaml_node_t *root);
void config_api_free(config *c);
/* A secret file (api access keys, feedback.secret_file): PATH (resolved) for node V must be a
 * regular file giving group and others no access (mode 0600/0400). Its bytes, one trailing
 * newline removed, into *out (malloc'd, NUL-terminated; the caller wipes and frees it) and
 * *len; at most MAX + 2 bytes are read, so *len > MAX means the file is too long. What the
 * bytes may be and how few are enough are the caller's checks. 0, or -1 with the error
 * recorded (the secret never appears in it). */
int config_read_secret_file(config_parser *p, yaml_node_t *v, const char *path, size_t max,
                            char **out, size_t *len);

/* ---- config_feedback.c ---- */

/* The feedback section (issue 14): defaults; its reader (after submission and api, whose
 * listen addresses it must not reuse); what it allocated. */
void config_feedback_defaults(config *c);
int config_read_feedback(config_parser *p, yaml_node_t *root);
void config_feedback_free(config *c);

/* ---- config_metrics.c ---- */

/* The metrics section (issue 15): its reader (after submission, api and feedback, whose
 * listen addresses it must not reuse); what it allocated. */
int config_read_metrics(config_parser *p, yaml_node_t *root);
void config_metrics_free(config *c);

/* ---- config_cluster.c ---- */

/* The cluster section (issue 17): defaults; its reader (after ips, whose node keys it
 * cross-checks: required with the section, refused without it); what it allocated; its
 * --check-config summary line (nothing without the section). */
void config_cluster_defaults(config *c);
int config_read_cluster(config_parser *p, yaml_node_t *root);
void config_cluster_free(config *c);
void config_cluster_summary(strbuf *sb, const config *c);

/* ---- config_limits.c ---- */

/* The submission limits' defaults, and their keys read from the submission map M. */
void config_limits_defaults(config *c);
int config_read_submission_limits(config_parser *p, yaml_node_t *m);

/* ---- config_query.c ---- */

void config_free(config *c);   /* everything config_load allocated, whatever it got to */

/* ---- config.c / config_sending.c ---- */

#define CONFIG_WHAT_NAME "a valid name (letters, digits, '-' and '_', at most 64)"

/* "a, b, c" (or none when n is 0) into sb. */
void config_names_text(strbuf *sb, char *const *names, size_t n, const char *none);
/* The sending side's section readers (config_sending.c), called by config_read_root. */
int config_read_zones(config_parser *p, yaml_node_t *v);
int config_read_pools(config_parser *p, yaml_node_t *v);
int config_read_ips(config_parser *p, yaml_node_t *v);
int config_read_sets(config_parser *p, yaml_node_t *v);
/* Why URL cannot be used by kiln's HTTP clients or in a header (malloc'd), or NULL when it
 * can: http:// or https:// (https:// only when HTTPS_ONLY), a host (DNS name or IP literal),
 * an optional port 1..65535, no user info, no fragment, no blanks or control characters;
 * split by curl's URL parser (config_events.c). */
char *config_url_problem(const char *url, bool https_only);
/* A set's `events` list (config_events.c): file and webhook destinations. */
int config_read_events(config_parser *p, yaml_node_t *v, config_set *s);
/* ", batch 10, max_backlog 500, ca_file /x" for what differs from the defaults. */
void config_summary_webhook(strbuf *sb, const config_event_dest *e);
/* A set's list_unsubscribe and feedback_id keys of its map IT (config_unsub.c). */
int config_read_set_unsub(config_parser *p, yaml_node_t *it, config_set *s);
/* ", list_unsubscribe <url> (mailto ADDR), feedback_id X" for the summary (config_unsub.c). */
void config_summary_unsub(strbuf *sb, const config_set *s);
int config_read_default_set(config_parser *p, yaml_node_t *root);
int config_read_warmup(config_parser *p, yaml_node_t *m);
int config_read_shaping(config_parser *p, yaml_node_t *m);

#endif
