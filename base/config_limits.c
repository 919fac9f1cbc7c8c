/* config_limits.c — the submission section's limits against one client starving the others
 * (issue items 4 and 8): max_sessions, reserved_sessions, max_sessions_per_client,
 * max_connection_rate_per_client, limit_trusted_clients, session_deadline, min_data_rate,
 * min_data_rate_window, max_junk_commands. Their defaults and their readers live here, apart
 * from config.c, which only lists the keys and calls config_read_submission_limits.
 *
 * Promises: every value is checked with an error naming the key and what is allowed;
 * "auto" (max_sessions, reserved_sessions) is kept as a sentinel for the daemon to resolve
 * against RLIMIT_NOFILE (mta/smtp_limits.c), because the file's reader does not know the
 * process's limits; explicit values that contradict each other are errors. */
#include "base/config_internal.h"

#include <limits.h>
#include <string.h>

#define LIMITS_PER_CLIENT_DEFAULT 50
#define LIMITS_RATE_DEFAULT 100            /* connections per minute per client */
#define LIMITS_DEADLINE_DEFAULT MS_HOUR
#define LIMITS_DATA_RATE_DEFAULT 500       /* bytes/s, as Postfix's smtpd_min_data_rate */
#define LIMITS_DATA_WINDOW_DEFAULT (30 * MS_SECOND)
#define LIMITS_JUNK_DEFAULT 100            /* as Postfix's smtpd_junk_command_limit */

static const char *const config_limits_bool_names[] = {"false", "true", NULL};

void config_limits_defaults(config *c)
{
    c->max_sessions = 0;
    c->reserved_sessions = -1;
    c->max_sessions_per_client = LIMITS_PER_CLIENT_DEFAULT;
    c->max_connection_rate_per_client.count = LIMITS_RATE_DEFAULT;
    c->max_connection_rate_per_client.per_ms = MS_MINUTE;
    c->limit_trusted_clients = false;
    c->session_deadline_ms = LIMITS_DEADLINE_DEFAULT;
    c->min_data_rate = LIMITS_DATA_RATE_DEFAULT;
    c->min_data_rate_window_ms = LIMITS_DATA_WINDOW_DEFAULT;
    c->max_junk_commands = LIMITS_JUNK_DEFAULT;
}

int config_parse_byte_rate(const char *s, int64_t *bytes_per_s)
{
    if (!s || !*s) return -1;
    size_t n = strlen(s);
    char buf[64];
    if (n >= sizeof buf) return -1;
    memcpy(buf, s, n + 1);
    if (n > 2 && strcmp(buf + n - 2, "/s") == 0) buf[n - 2] = '\0';
    if (!buf[0] || buf[0] == '-' || buf[0] == '+') return -1;
    return config_parse_size(buf, bytes_per_s);
}

/* "auto" (-> AUTO) or a whole number in [MIN, MAX]. */
static int config_limits_auto_int(config_parser *p, yaml_node_t *v, int min, int auto_value,
                                  int *out)
{
    if (v->type == YAML_SCALAR_NODE && strcmp(config_sval(v), "auto") == 0) {
        *out = auto_value;
        return 0;
    }
    int64_t x;
    if (v->type != YAML_SCALAR_NODE || config_parse_int(config_sval(v), &x) < 0)
        return config_fail(p, v, "'%s' is not auto or a whole number",
                           v->type == YAML_SCALAR_NODE ? config_sval(v) : config_kind(v));
    char range[80];
    snprintf(range, sizeof range, "auto or a whole number from %d to %d", min, INT_MAX);
    return config_as_int32(p, v, min, INT_MAX, range, out);
}

static int config_limits_byte_rate(config_parser *p, yaml_node_t *v, int64_t *out)
{
    const char *s = NULL;
    if (config_as_scalar(p, v, "a transfer rate", &s) < 0) return -1;
    if (config_parse_byte_rate(s, out) < 0)
        return config_fail(p, v,
                           "'%s' is not a transfer rate (bytes per second: e.g. 500, 2KB or "
                           "2KB/s; 0 turns the check off)", s);
    return 0;
}

static int config_limits_bool(config_parser *p, yaml_node_t *v, bool *out)
{
    int i = 0;
    if (config_as_enum(p, v, config_limits_bool_names, &i) < 0) return -1;
    *out = i == 1;
    return 0;
}

int config_read_submission_limits(config_parser *p, yaml_node_t *m)
{
    config *c = p->cfg;
    FIELD(m, "max_sessions", v, config_limits_auto_int(p, v, 1, 0, &c->max_sessions));
    FIELD(m, "reserved_sessions", v, config_limits_auto_int(p, v, 0, -1, &c->reserved_sessions));
    FIELD(m, "max_sessions_per_client", v,
          config_as_int32(p, v, -1, INT_MAX, "-1 (unlimited) or at least 1",
                          &c->max_sessions_per_client));
    if (c->max_sessions_per_client == 0) {
        config_push_key(p, "max_sessions_per_client");
        return config_fail(p, config_lookup(p, m, "max_sessions_per_client", NULL),
                           "must be -1 (unlimited) or at least 1, not 0");
    }
    FIELD(m, "max_connection_rate_per_client", v,
          config_as_rate(p, v, &c->max_connection_rate_per_client));
    FIELD(m, "limit_trusted_clients", v, config_limits_bool(p, v, &c->limit_trusted_clients));
    FIELD(m, "session_deadline", v, config_as_duration(p, v, false, &c->session_deadline_ms));
    FIELD(m, "min_data_rate", v, config_limits_byte_rate(p, v, &c->min_data_rate));
    FIELD(m, "min_data_rate_window", v,
          config_as_duration(p, v, true, &c->min_data_rate_window_ms));
    FIELD(m, "max_junk_commands", v,
          config_as_int32(p, v, -1, INT_MAX, "-1 (unlimited) or at least 0",
                          &c->max_junk_commands));
    if (c->max_sessions > 0 && c->reserved_sessions >= c->max_sessions) {
        config_push_key(p, "reserved_sessions");
        return config_fail(p, config_lookup(p, m, "reserved_sessions", NULL),
                           "%d leaves no session for other clients: it must be below "
                           "max_sessions (%d)", c->reserved_sessions, c->max_sessions);
    }
    return 0;
}
