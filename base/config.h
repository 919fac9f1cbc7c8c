/* config.h — kiln's configuration (SPEC section 1) as a validated, immutable struct.
 * base/config_value.c holds the value parsers, base/config_yaml.c the YAML walker,
 * base/config.c the sections, base/config_query.c lookups and the summary.
 * config_load() parses the YAML file (config_load_text() YAML text held in memory) with
 * libyaml's node API (line numbers for errors),
 * rejects unknown keys, checks every value and cross-reference, and resolves relative
 * paths against the config file's directory. A loaded config never changes; a reload
 * loads a new one and swaps it in. Configs are reference-counted so that sessions that
 * started under the old one can finish with it. */
#ifndef KILN_CONFIG_H
#define KILN_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct config_hostport {
    char *host;              /* "127.0.0.1", "::1" or a name */
    int port;
} config_hostport;

typedef struct config_cidr {
    int family;              /* AF_INET or AF_INET6 */
    unsigned char addr[16];  /* network bytes (4 used for AF_INET) */
    int prefix;              /* 0..32 or 0..128 */
} config_cidr;

typedef struct config_auth_user {
    char *user;
    char *password_hash;     /* crypt(3) string: $y$…, $6$…, $5$…, $2b$… */
    /* Authorization scope (absent = everything, as before): identities this user may send
     * as (lower-case domains or addresses, each covered by account.identities) and the
     * configuration sets it may use (each one of configuration_sets). */
    bool scoped_identities;
    char **identities;
    size_t nidentities;
    bool scoped_sets;
    char **configuration_sets;
    size_t nconfiguration_sets;
} config_auth_user;

/* One api.access_keys entry (base/config_api.c): an AWS-style access key for the SES v2 API
 * (SigV4) and for SMTP AUTH with SES's derived SMTP password. */
typedef struct config_access_key {
    char *id;                /* access key id: 16..128 of [A-Z0-9] */
    char *secret_file;       /* absolute; one line, mode 0600 or 0400 (checked at load) */
    char *secret;            /* the secret access key read from it */
    /* Authorization scope, as submission.auth's: scope.user is the key id, password_hash NULL. */
    config_auth_user scope;
} config_access_key;

typedef struct config_route {
    char *domain;            /* lower-case */
    char *host;
    int port;                /* defaults to delivery.remote_port */
} config_route;

typedef enum { CONFIG_WARMUP_NEW = 0, CONFIG_WARMUP_DONE = 1 } config_warmup_state;

typedef struct config_ip {
    char *address;           /* textual IPv4/IPv6 address, as written: the one kiln binds */
    char *public_address;    /* the address the world sees when NAT maps it onto address
                                (a cloud's elastic/public IP), same family; NULL: address
                                is public itself. EHLO checks, SPF, events and kilnctl ips
                                use it; binding never does */
    char *zone;              /* one of config.zones */
    char *pool;              /* one of config.pools[].name */
    char *ehlo;              /* NULL: server.hostname */
    config_warmup_state warmup;
    char *node;              /* cluster (issue 17): the node that binds it and sends from it;
                                required with a cluster: section, refused without one */
    int line;                /* line in the file, for messages */
} config_ip;

/* cluster.submission_peers: one node's submission address (base/config_cluster.c). */
typedef struct config_peer {
    char *node;
    config_hostport addr;
} config_peer;

typedef enum { CONFIG_SCALING_STANDARD = 0, CONFIG_SCALING_MANAGED = 1 } config_scaling;

typedef struct config_pool {
    char *name;
    config_scaling scaling;
    char *overflow;          /* NULL = defer; else the name of another pool */
} config_pool;

typedef enum { CONFIG_EVENT_FILE = 0, CONFIG_EVENT_WEBHOOK = 1 } config_event_type;

#define CONFIG_WEBHOOK_BATCH_MAX 100
#define CONFIG_WEBHOOK_BACKLOG_DEFAULT 1000000
#define CONFIG_WEBHOOK_BACKLOG_MAX 1000000000

typedef struct config_event_dest {
    config_event_type type;
    char *path;              /* file: absolute path */
    char *url;               /* webhook: an http:// or https:// URL curl can use (checked) */
    char *ca_file;           /* webhook: absolute path of PEM CA certificates to trust
                                instead of the system store; NULL = the system store */
    int batch;               /* webhook: events per POST, 1..100 (1: one JSON object; more:
                                a JSON array of up to batch events); default 1 */
    int64_t max_backlog;     /* webhook: undelivered events kept; past it the oldest are
                                dropped; default 1,000,000 */
} config_event_dest;

/* configuration_sets[].tls_policy (README "Outbound TLS"): optional = STARTTLS when offered,
 * unverified, clear text when the handshake fails; require = encrypted, unverified (as SES's
 * TlsPolicy Require); verify = encrypted, chain and name of the MX host verified; dane =
 * RFC 7672 DANE where the MX host has DNSSEC-validated TLSA records, else optional; mta-sts =
 * RFC 8461 MTA-STS where the domain publishes a policy (enforce: MX hosts of the policy only,
 * verified), else optional. */
typedef enum {
    CONFIG_TLS_OPTIONAL = 0,
    CONFIG_TLS_REQUIRE = 1,
    CONFIG_TLS_VERIFY = 2,
    CONFIG_TLS_DANE = 3,
    CONFIG_TLS_MTA_STS = 4,
} config_tls_policy;

/* What kiln does with a message it must sign and cannot (no key, or the Easy DKIM record
 * not live yet): hold it (deferred, retried) or bounce it. */
typedef enum { CONFIG_UNSIGNED_DEFER = 0, CONFIG_UNSIGNED_REJECT = 1 } config_on_unsigned;
/* SES BehaviorOnMxFailure: the MAIL FROM domain has no MX record. */
typedef enum { CONFIG_MXFAIL_USE_DEFAULT = 0, CONFIG_MXFAIL_REJECT = 1 } config_mx_failure;

/* One DKIM key the operator brings (BYODKIM). */
typedef struct config_dkim_key {
    char *selector;
    char *private_key_file;  /* absolute */
} config_dkim_key;

/* Sender authentication of one account.identities entry (base/config_identity.c); the
 * string form of an entry leaves everything at its default. */
typedef struct config_identity {
    config_dkim_key dkim;        /* dkim.selector / dkim.private_key_file; NULL: Easy DKIM
                                    (kilnctl identity dkim generate) */
    config_dkim_key dkim_ed25519;   /* dkim.ed25519: a second signature (RFC 8463); NULL: none */
    bool dkim_required;          /* never send unsigned; default true with a key file, else false */
    config_on_unsigned on_unsigned;  /* dkim.on_unsigned; default defer */
    char *mail_from_domain;      /* mail_from.domain: a subdomain of the identity's domain */
    config_mx_failure mx_failure;    /* mail_from.behavior_on_mx_failure; default UseDefaultValue */
} config_identity;

typedef struct config_set {
    char *name;
    char *pool;              /* one of config.pools[].name */
    config_tls_policy tls_policy;
    int64_t max_delivery_time_ms;   /* default 14h; at most 14h */
    config_event_dest *events;
    size_t nevents;
    int priority;            /* kiln extension: -1000..1000, default 0; when sets compete for
                                the same IPs and connections, higher is served first */
    /* One-click unsubscribe (RFC 8058) and Gmail's Feedback-ID (base/config_unsub.c; the
     * header fields are built by mta/unsub.c). A set with unsub_url is "marked": its
     * messages get List-Unsubscribe and List-Unsubscribe-Post, replacing the submitter's. */
    char *unsub_url;         /* list_unsubscribe.url: an https:// URL template of at most
                                CONFIG_UNSUB_URL_MAX bytes, variables only in its path and
                                query (config_unsub_var_at); NULL: the set is not marked */
    char *unsub_mailto;      /* list_unsubscribe.mailto: an address (kiln writes
                                mailto:ADDR?subject=unsubscribe), or NULL */
    char *feedback_id;       /* feedback_id: the Feedback-ID value (printable ASCII, at most
                                CONFIG_FEEDBACK_ID_MAX bytes), or NULL */
} config_set;

#define CONFIG_UNSUB_URL_MAX 500     /* bytes of a list_unsubscribe.url template */
#define CONFIG_FEEDBACK_ID_MAX 200   /* bytes of a feedback_id */

/* The variables of a list_unsubscribe.url template. */
typedef enum {
    CONFIG_UNSUB_RECIPIENT = 0,      /* {recipient}: the recipient's address */
    CONFIG_UNSUB_MESSAGE_ID = 1,     /* {message_id}: kiln's message ID */
    CONFIG_UNSUB_SET = 2,            /* {configuration_set}: the set's name */
} config_unsub_var;

typedef enum { CONFIG_ADVANCE_CALENDAR = 0, CONFIG_ADVANCE_VOLUME = 1 } config_advance;

typedef struct config_warmup {
    int days;                /* default 45 */
    int64_t first_day;       /* default 50 */
    int64_t target;          /* default 50000 */
    config_advance advance;  /* default calendar */
    int pacing;              /* default 4; 0 = off */
} config_warmup;

typedef struct config_rate {
    int64_t count;           /* -1 = no limit */
    int64_t per_ms;          /* 1000, 60000 or 3600000 */
} config_rate;

typedef struct config_shaping_limits {
    int connections;                 /* -1 = unset (providers inherit default) */
    int messages_per_connection;     /* -1 = unset */
    config_rate rate;                /* rate.count == -1 and rate.per_ms == 0: unset */
} config_shaping_limits;

typedef struct config_provider {
    char *name;
    char **mx_suffix;
    size_t nmx_suffix;
    config_shaping_limits limits;    /* unset fields inherit shaping.default */
} config_provider;

typedef enum { CONFIG_MODE_SANDBOX = 0, CONFIG_MODE_PRODUCTION = 1 } config_mode;

enum {                               /* account.suppression.reasons bits */
    CONFIG_SUPPRESS_BOUNCE = 1,
    CONFIG_SUPPRESS_COMPLAINT = 2,
};

typedef struct config {
    int refs;
    char *path;              /* the file as given */
    char *dir;               /* its directory, absolute */

    /* server */
    char *hostname;          /* required */
    char *region;            /* default "local" */
    char *spool;             /* absolute directory; default <dir>/spool */
    char *control_socket;    /* absolute; default <spool>/kilnd.sock */
    char *log;               /* "stderr" or absolute path; default stderr */
    int log_level;           /* klog_level; default info */
    /* server: privileges (mta/privdrop.c drops to them after binding the listeners) */
    char *user;              /* server.user; NULL: stay the starting user (never root) */
    char *group;             /* server.group; NULL: the user's primary group */

    /* dns */
    config_hostport *dns_servers;   /* none: /etc/resolv.conf */
    size_t ndns_servers;
    int64_t dns_timeout_ms;  /* default 2s */

    /* submission */
    config_hostport *listen; /* at least one; default 127.0.0.1:2587 */
    size_t nlisten;
    char *tls_cert;          /* absolute; NULL when submission.tls absent */
    char *tls_key;
    config_auth_user *auth;  /* NULL/0: AUTH not offered or required */
    size_t nauth;
    config_cidr *trusted;
    size_t ntrusted;
    int auth_failures_max;          /* failed AUTHs per client in the window; default 10 */
    int64_t auth_failures_window_ms;  /* default 5m */
    int64_t max_message_size;   /* bytes; default 10MB */
    int max_recipients;         /* default 50 */
    /* submission limits against one client starving the others (base/config_limits.c;
     * enforced by mta/smtp_limits.c and the session) */
    int max_sessions;           /* 0 = auto (the default): min(1000, RLIMIT_NOFILE - 164) */
    int reserved_sessions;      /* of max_sessions kept for trusted and authenticated clients;
                                   -1 = auto (the default): max_sessions / 5 */
    int max_sessions_per_client;        /* per client IP; default 50; -1 = unlimited */
    config_rate max_connection_rate_per_client; /* per client IP; default 100/m; -1 = none */
    bool limit_trusted_clients; /* default false: trusted_networks are exempt from the two above */
    int64_t session_deadline_ms;        /* whole session; default 1h; 0 = none */
    int64_t min_data_rate;      /* bytes/s in DATA; default 500; 0 = none */
    int64_t min_data_rate_window_ms;    /* judged after this much of DATA; default 30s */
    int max_junk_commands;      /* NOOP/RSET/VRFY/unknown/rejected RCPT between two accepted
                                   messages; default 100; -1 = unlimited */
    int64_t max_inflight_bytes; /* message bytes held in memory by all sessions together;
                                   default config_default_inflight_bytes() */

    /* api (base/config_api.c): the SES v2 HTTP API; napi_listen 0 = off */
    config_hostport *api_listen;
    size_t napi_listen;
    char *api_tls_cert;          /* absolute; NULL: plain HTTP */
    char *api_tls_key;
    config_access_key *api_keys;
    size_t napi_keys;
    int64_t api_max_body_size;   /* bytes of one request body; default 41943040 + 1 MB of JSON
                                    around it (SES's 40 MB raw message cap) */
    int64_t api_max_inflight_bytes;  /* request bodies in memory together; default 256 MB */
    int api_max_connections;     /* default 256 */
    int api_max_connections_per_client;  /* default 64 */
    int64_t api_timeout_ms;      /* idle/slow request; default 60s */
    config_rate api_max_request_rate;    /* per access key, every operation; default 200/s;
                                            count -1 = none (SendEmail is also held to
                                            account.max_send_rate, account-wide) */

    /* feedback (base/config_feedback.c, issue 14): the inbound listener for asynchronous
     * bounces (DSN) and complaints (ARF). The section is optional; when present, listen and
     * secret_file are required. Without it nothing changes (no listener, MAIL FROM as
     * before). */
    bool feedback_on;               /* the section is present */
    config_hostport *feedback_listen;
    size_t nfeedback_listen;
    char *feedback_bounce_domain;   /* lower-case; the VERP domain (bounce+TOKEN@DOMAIN) of
                                       messages whose identity has no custom MAIL FROM; NULL:
                                       those keep the sender as MAIL FROM */
    char **feedback_addresses;      /* lower-case addresses that take ARF reports (the
                                       feedback loops' destinations); may be empty */
    size_t nfeedback_addresses;
    unsigned char *feedback_secret; /* the VERP tokens' HMAC key: secret_file's bytes, the
                                       trailing newline removed; at least 16 bytes */
    size_t feedback_secret_len;
    char *feedback_secret_file;     /* absolute; mode 0600 or 0400 (checked like api keys) */
    int64_t feedback_max_message_size;  /* bytes of one report; default 10485760 (10 MB) */
    int64_t feedback_retention_ms;  /* how long a sent message can still be matched by a late
                                       report; default 14d (SES's statistics window) */
    double feedback_complaint_hold_rate;  /* a provider's complaint rate (complaints /
                                       deliveries over 24 h, per pool) above which its managed
                                       warm-up ramp is held; default 0.001 (SES's 0.1 %
                                       warning); 0 = never held */

    /* metrics (base/config_metrics.c, issue 15): the Prometheus scrape listener; optional
     * (nmetrics_listen 0 = no listener) */
    config_hostport *metrics_listen;
    size_t nmetrics_listen;
    char *metrics_token;            /* token_file's content (printable ASCII, 16 to 4096
                                       characters); NULL: no token_file */
    char *metrics_token_file;       /* absolute; mode 0600 or 0400 (checked like api keys) */

    /* cluster (base/config_cluster.c, issue 17): several kilnd nodes as one account through
     * Redis. Optional; without it nothing changes (no Redis, every ip is this host's). */
    bool cluster_on;                /* the section is present */
    char *cluster_node;             /* this node's name: cluster.node, or kilnd --node (which
                                       wins; config_cluster_select_node); one of cluster_nodes */
    char *cluster_redis_url;        /* as written */
    char *cluster_redis_host;       /* redis://HOST:PORT/DB; NULL for unix:// */
    int cluster_redis_port;         /* default 6379 */
    char *cluster_redis_unix;       /* unix:///PATH: the socket's absolute path; else NULL */
    int cluster_redis_db;           /* redis://.../DB; default 0 */
    char *cluster_redis_password;   /* password_file's content; NULL: no AUTH */
    char *cluster_redis_password_file;  /* absolute; mode 0600/0400 (checked like api keys) */
    char *cluster_key_prefix;       /* every key kiln writes starts with it; default "kiln:" */
    double cluster_local_share;     /* 0 < x <= 1: the fraction of max_send_rate and
                                       max_24h_send held alone while Redis is away; default
                                       1 / ncluster_nodes */
    config_peer *cluster_peers;     /* cluster.submission_peers, in file order */
    size_t ncluster_peers;
    char **cluster_nodes;           /* every node named by ips[].node or submission_peers,
                                       sorted, each once */
    size_t ncluster_nodes;

    /* account */
    config_mode mode;           /* default sandbox */
    int64_t max_24h_send;       /* -1 = unlimited; default 200 */
    double max_send_rate;       /* -1 = unlimited; default 1 */
    char **identities;          /* lower-case domains or addresses */
    size_t nidentities;
    config_identity *identity_auth; /* nidentities of them, same order: DKIM and MAIL FROM */
    char **verified_recipients; /* lower-case domains or addresses */
    size_t nverified_recipients;
    unsigned suppression_reasons;   /* CONFIG_SUPPRESS_* bits; default both */

    /* delivery */
    int remote_port;            /* default 25 */
    int64_t retry_first_ms;     /* default 60s */
    int64_t retry_max_interval_ms;  /* default 1h */
    double retry_factor;        /* default 2 */
    int64_t connect_timeout_ms; /* default 10s */
    int64_t queue_memory_recipients;  /* kiln extension: the scheduler's in-memory recipient
                                         budget (beyond it recipients stay in the spool and are
                                         paged in); default 200000, at least 100 */
    bool allow_private_mx;      /* kiln extension for labs and tests: deliver to MX (or A
                                   fallback) answers in loopback, private, link-local,
                                   unspecified, CGNAT or unique-local ranges and to kiln's own
                                   addresses; default false (5.4.4 bounce, issue 11 item 8) */
    /* delivery: outbound TLS (base/config_tls.c) */
    char *tls_ca_file;          /* delivery.tls_ca_file, absolute; NULL: the system CA store */
    int64_t mta_sts_fetch_timeout_ms;   /* delivery.mta_sts.fetch_timeout; default 10s */
    int64_t mta_sts_cache_size;         /* delivery.mta_sts.cache_size (domains); default 10000 */
    int mta_sts_port;           /* delivery.mta_sts.port: lab/test key; default 443 */

    config_route *routes;
    size_t nroutes;
    char **zones;
    size_t nzones;
    config_ip *ips;
    size_t nips;
    config_pool *pools;
    size_t npools;
    config_set *sets;
    size_t nsets;
    char *default_set;          /* name of one of sets; required when sets exist */
    config_warmup warmup;
    config_shaping_limits shaping_default;  /* default {10, 100, 50/s} */
    config_provider *providers;
    size_t nproviders;

    char **warnings;            /* non-fatal findings (small pools, short max_delivery_time) */
    size_t nwarnings;
} config;

/* True if this system can check password_hash, a "$id$..." string from submission.auth
 * (mta/auth.h's auth_hash_usable asks libcrypt). The caller hands it in: base/ knows no mta/. */
typedef bool config_hash_check(const char *password_hash);

/* Parse and validate FILE. On error returns NULL and *err (malloc'd) reads
 * "FILE:LINE: KEY: what is wrong", e.g. "conf/kiln.yaml:12: account.mode: must be sandbox or production".
 * hash_usable vets each submission.auth password_hash beyond its "$id$..." shape (NULL: the
 * shape only); a hash it refuses is an error like any other. */
config *config_load(const char *path, config_hash_check *hash_usable, char **err);
/* The same for a config held in memory: LEN bytes of YAML TEXT (NUL bytes included, as a
 * file could hold them). NAME stands for the file in errors and as cfg->path; relative paths
 * resolve against DIR, which must be absolute. Reads no file but those the config names
 * (submission.tls), writes none. */
config *config_load_text(const char *text, size_t len, const char *name, const char *dir,
                         config_hash_check *hash_usable, char **err);
config *config_ref(config *cfg);
/* Cluster (issue 17): makes NODE (kilnd --node; NULL: keep cluster.node) this node's name.
 * 0, or -1 with *err (malloc'd) when the config has a cluster: section and the name is
 * missing or not one of cluster_nodes, or NODE is given without a cluster: section. */
int config_cluster_select_node(config *c, const char *node, char **err);
/* The index of NAME in c->cluster_nodes, or -1. */
int config_cluster_node_index(const config *c, const char *name);
void config_unref(config *cfg);

/* Warnings about the files as they are on disk now (not part of a load, so a reload or a
 * unit test does not depend on file modes): the config file or the submission TLS key
 * readable by other users (mode & 004). Lines without "\n" (malloc'd, *n of them); kilnd
 * --check-config prints them and kilnd logs them at start (config_security.c). */
char **config_file_warnings(const config *c, size_t *n);
void config_file_warnings_free(char **w, size_t n);

/* Human summary for --check-config: pools, IPs per zone, configuration sets, warnings. */
char *config_summary(const config *cfg);

/* The account.identities entry that verifies addr (an address, or a bare domain): an equal
 * address entry first, else the longest domain entry equal to or above its domain; -1: none. */
int config_identity_index(const config *c, const char *addr);
const config_set *config_find_set(const config *cfg, const char *name);
/* The api.access_keys entry with this id (exact match), or NULL. */
const config_access_key *config_find_access_key(const config *cfg, const char *id);
/* If s starts with a variable of a list_unsubscribe.url template ("{recipient}",
 * "{message_id}", "{configuration_set}"), which one, with its length in *len; else -1. */
int config_unsub_var_at(const char *s, size_t *len);
/* True when the set's list_unsubscribe.url names {recipient}: each recipient's message
 * differs, so the scheduler gives each recipient of the set a job of its own. */
bool config_set_per_recipient(const config_set *s);
const config_pool *config_find_pool(const config *cfg, const char *name);
/* Route for a domain (case-insensitive exact match), or NULL. */
const config_route *config_find_route(const config *cfg, const char *domain);
/* True if addr (an IPv4/IPv6 literal) is inside one of submission.trusted_networks. */
bool config_is_trusted(const config *cfg, const char *addr);
/* Default of submission.max_inflight_bytes: a quarter of physical memory, at least 256MB,
 * at most 4GB, and never below 4 x max_message_size. */
int64_t config_default_inflight_bytes(int64_t max_message_size);

/* Absolute, symlink-free directory of the file at path (malloc'd), or NULL and *err (err may
 * be NULL). Relative paths in a config are resolved against it. */
char *config_file_dir(const char *path, char **err);
/* Absolute path for rel against dir (itself absolute): "." components and repeated slashes
 * go away, leading ".." components climb dir; an absolute rel is returned as is. Malloc'd. */
char *config_resolve_path(const char *dir, const char *rel);

/* Pure value parsers, exported for tests. Return 0 on success, -1 on bad input. */
int config_parse_size(const char *s, int64_t *bytes);        /* "10MB", "512KB", "1GB", "123" (bytes, 2^10 units, B/KB/MB/GB, case-insensitive) */
int config_parse_duration(const char *s, int64_t *ms);       /* "500ms", "30s", "5m", "14h", "2d" */
int config_parse_rate(const char *s, config_rate *rate);     /* "50/s", "10/m", "1000/h", "-1" */
int config_parse_hostport(const char *s, int default_port, config_hostport *hp);  /* "127.0.0.1:5353", "[::1]:25", "host" */
int config_parse_cidr(const char *s, config_cidr *c);        /* "127.0.0.0/8", "::1/128", "10.0.0.1" */
int config_parse_byte_rate(const char *s, int64_t *bytes_per_s);  /* "500", "2KB", "2KB/s" (bytes per second) */

#endif
