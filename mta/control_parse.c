/* control_parse.c — the control protocol's requests as data (see control_parse.h): request
 * lines framed out of a client's bytes, each decoded with jansson and checked against the
 * command's arguments. What control.c answers for a bad request, and what control_cmd.c
 * can rely on for a good one (a known command, arguments of the right type and range), is
 * decided here, and nowhere else. Pure: no I/O, no kiln state. */
#include "mta/control_parse.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "pools/forecast.h"

control_line_status control_parse_line(const char *buf, size_t n, bool eof, size_t *len,
                                       size_t *used)
{
    const char *nl = n ? memchr(buf, '\n', n) : NULL;
    size_t l;
    if (nl) {
        l = (size_t)(nl - buf);
        *used = l + 1;
    } else if (eof && n > 0) {
        l = *used = n;   /* a last line without its newline */
    } else {
        *len = *used = 0;
        return n > CONTROL_MAX_LINE ? CONTROL_LINE_TOO_LONG : CONTROL_LINE_MORE;
    }
    if (l > CONTROL_MAX_LINE) {
        *len = 0;
        return CONTROL_LINE_TOO_LONG;
    }
    while (l > 0 && (buf[l - 1] == '\r' || buf[l - 1] == ' ' || buf[l - 1] == '\t')) l--;
    *len = l;
    return CONTROL_LINE_OK;
}

const char *control_address_problem(const char *addr)
{
    size_t len = strlen(addr);
    if (len == 0) return "is empty";
    if (len > CONTROL_MAX_ADDRESS) return "is longer than 254 characters";
    const char *at = strchr(addr, '@');
    if (!at || strchr(at + 1, '@')) return "must contain exactly one @";
    if (at == addr || at[1] == '\0') return "needs a local part and a domain around the @";
    for (const char *p = addr; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c <= 0x20 || c == 0x7f || c == '<' || c == '>')
            return "must not contain spaces, control characters or angle brackets";
    }
    return NULL;
}

/* Records the error (and what the log line names); returns -1. */
static int control_parse_fail(control_request *req, char *error, const char *subject)
{
    req->error = error;
    free(req->subject);
    req->subject = subject ? util_strdup(subject) : NULL;
    return -1;
}

/* "BOUNCE"/"COMPLAINT" in any case -> the canonical name, else NULL. */
static const char *control_parse_reason_name(const char *r)
{
    if (util_streq_ci(r, "BOUNCE")) return "BOUNCE";
    if (util_streq_ci(r, "COMPLAINT")) return "COMPLAINT";
    return NULL;
}

/* args.reason when given (not absent, not null): 0 and *out, or -1 after the error. */
static int control_parse_reason(control_request *req, json_t *args, const char **out)
{
    json_t *jr = json_object_get(args, "reason");
    if (!jr || json_is_null(jr)) return 0;
    *out = json_is_string(jr) ? control_parse_reason_name(json_string_value(jr)) : NULL;
    if (!*out)
        return control_parse_fail(req, util_strdup("reason must be BOUNCE or COMPLAINT"),
                                  req->address);
    return 0;
}

/* args.address as a mail address: req->address lower-cased, or -1 after the error. */
static int control_parse_mail_address(control_request *req, json_t *args)
{
    json_t *ja = json_object_get(args, "address");
    if (!json_is_string(ja))
        return control_parse_fail(req, util_strdup("an address is required"), NULL);
    const char *addr = json_string_value(ja);
    const char *problem = control_address_problem(addr);
    if (problem)
        return control_parse_fail(req, util_asprintf("invalid address %s: it %s", addr, problem),
                                  addr);
    req->address = util_strdup(addr);
    util_lowercase(req->address);
    return 0;
}

/* args[key] as a non-empty string (copied to *out), or -1 after the error `missing`. */
static int control_parse_name(control_request *req, json_t *args, const char *key,
                              const char *missing, char **out)
{
    const char *v = json_string_value(json_object_get(args, key));
    if (!v || !*v) return control_parse_fail(req, util_strdup(missing), NULL);
    *out = util_strdup(v);
    return 0;
}

static const struct {
    const char *name;
    control_cmd_kind kind;
} control_parse_commands[] = {
    {"status", CONTROL_CMD_STATUS},
    {"quota", CONTROL_CMD_QUOTA},
    {"stats", CONTROL_CMD_STATS},
    {"reputation", CONTROL_CMD_REPUTATION},
    {"forecast", CONTROL_CMD_FORECAST},
    {"cluster.status", CONTROL_CMD_CLUSTER_STATUS},
    {"suppression.list", CONTROL_CMD_SUPPRESSION_LIST},
    {"suppression.add", CONTROL_CMD_SUPPRESSION_ADD},
    {"suppression.remove", CONTROL_CMD_SUPPRESSION_REMOVE},
    {"reload", CONTROL_CMD_RELOAD},
    {"ips", CONTROL_CMD_IPS},
    {"ip.warmup", CONTROL_CMD_IP_WARMUP},
    {"ip.check", CONTROL_CMD_IP_CHECK},
    {"zone.down", CONTROL_CMD_ZONE_DOWN},
    {"zone.up", CONTROL_CMD_ZONE_UP},
    {"queue", CONTROL_CMD_QUEUE},
    {"queue.explain", CONTROL_CMD_QUEUE_EXPLAIN},
    {"identity.status", CONTROL_CMD_IDENTITY_STATUS},
    {"identity.dkim.generate", CONTROL_CMD_DKIM_GENERATE},
    {"identity.dkim.rotate", CONTROL_CMD_DKIM_ROTATE},
};

/* A DNS name (letters, digits, '-', '.'; labels of 1-63; at most 253): domains and
 * selectors become file and DNS names. NULL if fine, else the reason. */
static const char *control_parse_dns_problem(const char *s)
{
    size_t n = strlen(s), label = 0;
    if (n == 0 || n > 253) return "must be a DNS name of 1 to 253 characters";
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '.') {
            if (label == 0) return "has an empty label";
            label = 0;
            continue;
        }
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-'))
            return "may hold only letters, digits, '-' and '.'";
        if (++label > 63) return "has a label longer than 63";
    }
    return label ? NULL : "ends with a dot";
}

/* args.key: a DNS name, lower-cased into *out (required or not). */
static int control_parse_dns_name(control_request *req, json_t *args, const char *key,
                                  bool required, char **out)
{
    json_t *j = json_object_get(args, key);
    if (!j || json_is_null(j)) {
        if (!required) return 0;
        return control_parse_fail(req, util_asprintf("a %s is required", key), NULL);
    }
    const char *v = json_string_value(j);
    if (!v) return control_parse_fail(req, util_asprintf("%s must be a string", key), NULL);
    const char *why = control_parse_dns_problem(v);
    if (why) return control_parse_fail(req, util_asprintf("%s '%.80s' %s", key, v, why), v);
    *out = util_strdup(v);
    for (char *c = *out; *c; c++)
        if (*c >= 'A' && *c <= 'Z') *c = (char)(*c - 'A' + 'a');
    return 0;
}

/* The arguments of a known command (args is an object). */
static int control_parse_args(control_request *req, json_t *args)
{
    switch (req->kind) {
    case CONTROL_CMD_SUPPRESSION_LIST:
        return control_parse_reason(req, args, &req->reason);
    case CONTROL_CMD_SUPPRESSION_ADD:
        req->reason = "BOUNCE";
        if (control_parse_mail_address(req, args) < 0) return -1;
        return control_parse_reason(req, args, &req->reason);
    case CONTROL_CMD_SUPPRESSION_REMOVE:
        return control_parse_mail_address(req, args);
    case CONTROL_CMD_IP_WARMUP: {
        if (control_parse_name(req, args, "address", "an IP address is required", &req->address) < 0)
            return -1;
        json_t *jp = json_object_get(args, "percent");
        if (!json_is_integer(jp) || json_integer_value(jp) < 0 || json_integer_value(jp) > 100)
            return control_parse_fail(req, util_strdup("percent must be an integer from 0 to 100"),
                                      req->address);
        req->percent = (int)json_integer_value(jp);
        return 0;
    }
    case CONTROL_CMD_IP_CHECK:
        return control_parse_name(req, args, "address", "an IP address is required", &req->address);
    case CONTROL_CMD_ZONE_DOWN:
    case CONTROL_CMD_ZONE_UP:
        return control_parse_name(req, args, "zone", "a zone name is required", &req->zone);
    case CONTROL_CMD_QUEUE: {
        json_t *jd = json_object_get(args, "domain");
        if (jd && !json_is_null(jd) && !json_is_string(jd))
            return control_parse_fail(req, util_strdup("domain must be a string"), NULL);
        if (json_is_string(jd)) req->domain = util_strdup(json_string_value(jd));
        return 0;
    }
    case CONTROL_CMD_QUEUE_EXPLAIN:
        return control_parse_name(req, args, "id", "a message ID is required", &req->id);
    case CONTROL_CMD_IDENTITY_STATUS: {
        json_t *jd = json_object_get(args, "domain");
        const char *v = json_string_value(jd);
        if (jd && !json_is_null(jd) && !v)
            return control_parse_fail(req, util_strdup("domain must be a string"), NULL);
        if (v && control_address_problem(v) == NULL) {   /* an address identity */
            req->domain = util_strdup(v);
            for (char *c = req->domain; *c; c++)
                if (*c >= 'A' && *c <= 'Z') *c = (char)(*c - 'A' + 'a');
            return 0;
        }
        return control_parse_dns_name(req, args, "domain", false, &req->domain);
    }
    case CONTROL_CMD_DKIM_GENERATE:
        if (control_parse_dns_name(req, args, "domain", true, &req->domain) < 0) return -1;
        if (control_parse_dns_name(req, args, "selector", false, &req->selector) < 0) return -1;
        req->ed25519 = json_is_true(json_object_get(args, "ed25519"));
        return 0;
    case CONTROL_CMD_DKIM_ROTATE:
        return control_parse_dns_name(req, args, "domain", true, &req->domain);
    case CONTROL_CMD_FORECAST: {
        json_t *js = json_object_get(args, "set");
        if (js && !json_is_null(js)) {
            const char *v = json_string_value(js);
            if (!v || !*v)
                return control_parse_fail(req, util_strdup("set must be a non-empty string"), NULL);
            req->set = util_strdup(v);
        }
        req->days = FORECAST_DEFAULT_DAYS;
        json_t *jd = json_object_get(args, "days");
        if (!jd || json_is_null(jd)) return 0;
        if (!json_is_integer(jd))
            return control_parse_fail(req, util_asprintf("days must be an integer from 1 to %d",
                                                         FORECAST_MAX_DAYS), req->set);
        char *why = forecast_days_problem((long long)json_integer_value(jd));
        if (why) return control_parse_fail(req, why, req->set);
        req->days = (int)json_integer_value(jd);
        return 0;
    }
    default:
        return 0;
    }
}

int control_parse_request(const char *line, size_t len, control_request *req)
{
    memset(req, 0, sizeof *req);
    req->cmd = util_strdup("");
    json_error_t jerr;
    json_t *root = json_loadb(line, len, 0, &jerr);
    if (!root || !json_is_object(root)) {
        char *e = root ? util_strdup("malformed request: expected a JSON object")
                       : util_asprintf("malformed request: %s (column %d)", jerr.text,
                                       jerr.column);
        json_decref(root);
        return control_parse_fail(req, e, NULL);
    }
    const char *cmd = json_string_value(json_object_get(root, "cmd"));
    json_t *args = json_object_get(root, "args");
    int rc = 0;
    if (!cmd) {
        rc = control_parse_fail(req, util_strdup("malformed request: \"cmd\" must be a string"),
                                NULL);
    } else {
        free(req->cmd);
        req->cmd = util_strdup(cmd);
        size_t i, n = sizeof control_parse_commands / sizeof control_parse_commands[0];
        for (i = 0; i < n && strcmp(control_parse_commands[i].name, cmd) != 0; i++) {
        }
        if (args && !json_is_object(args) && !json_is_null(args)) {
            rc = control_parse_fail(req, util_strdup("malformed request: \"args\" must be an object"),
                                    NULL);
        } else if (i == n) {
            rc = control_parse_fail(req, util_asprintf("unknown command: %s", cmd), NULL);
        } else {
            req->kind = control_parse_commands[i].kind;
            req->name = control_parse_commands[i].name;
            json_t *empty = json_object();
            rc = control_parse_args(req, json_is_object(args) ? args : empty);
            json_decref(empty);
        }
    }
    json_decref(root);
    return rc;
}

void control_request_free(control_request *req)
{
    free(req->address);
    free(req->zone);
    free(req->domain);
    free(req->id);
    free(req->selector);
    free(req->set);
    free(req->error);
    free(req->cmd);
    free(req->subject);
    memset(req, 0, sizeof *req);
}
