/* events.c — the SES mail object (built once at acceptance and stored with the message;
 * the event records built from it are store/event.c's), and the drain that appends outbox
 * rows to each configuration set's `file` destinations.
 *
 * The drain appends each new row plus "\n" to every file destination of its set (at most
 * 4 MB of event text per drain, at least one row; the rest on the next drain; the mail
 * object itself is capped, see events.h), fdatasyncs each touched file once, fsyncs the
 * directory of a file it created or opened again (so a power loss cannot take the new file
 * with its events), and only then records the files' progress (kv "events:files") and
 * deletes the rows. Those two are kept writes (store/spool.h): a failed spool batch does not
 * lose them. When a write or a sync fails, every file is cut back to its size before this
 * drain and nothing is released: the next drain writes the same rows once. A failure is
 * logged once as an error, repeats at debug level, and the recovery at info level.
 * Webhook destinations (webhook.c) post the rows of their set at their own pace and record
 * their own progress; rows are deleted up to the lowest progress of all destinations (a
 * crash may repeat an event, never lose one). Files stay open between drains; a file that
 * was moved away (log rotation) is opened again, and a config change closes them all and
 * builds the webhook destinations again. */
#include "mta/events.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/event.h"
#include "store/spool.h"
#include "base/log.h"
#include "store/stats.h"
#include "base/util.h"
#include "mta/webhook.h"

#define EVENTS_HEADERS_CAP 10240       /* SES truncates the headers list at 10 KB */
#define EVENTS_VALUE_CAP 2048          /* bytes of one header value or address entry */
#define EVENTS_LIST_CAP 8192           /* bytes of one commonHeaders address list */
#define EVENTS_MAIL_CAP 65536          /* the whole mail object (see events_mail_json) */
#define EVENTS_SHRUNK_VALUE 256        /* commonHeaders values when nothing else fits */
#define EVENTS_DRAIN_BATCH 1000
#define EVENTS_DRAIN_BYTES (4u << 20)  /* event bytes one drain reads (at least one row) */
#define EVENTS_FILES_KEY "events:files"

/* ------------------------------------------------------------------- mail object ---- */

/* Length of s cut to at most EVENTS_VALUE_CAP bytes, never inside a UTF-8 sequence;
 * sets *cut when it is shorter than s. */
static size_t events_capped_len(const char *s, size_t n, bool *cut)
{
    if (n <= EVENTS_VALUE_CAP) return n;
    *cut = true;
    size_t l = EVENTS_VALUE_CAP;
    while (l > 0 && ((unsigned char)s[l] & 0xc0) == 0x80) l--;
    return l;
}

static void events_shorten(json_t *j, size_t max);

/* A JSON string for s (n bytes) of at most EVENTS_VALUE_CAP bytes: cut before and again
 * after bytes that are not UTF-8 became U+FFFD (three bytes each). */
static json_t *events_capped_str(const char *s, size_t n, bool *cut)
{
    size_t l = events_capped_len(s, n, cut);
    json_t *j;
    if (l == n) {
        j = event_jstr(s);
    } else {
        char *c = util_strndup(s, l);
        j = event_jstr(c);
        free(c);
    }
    if (strlen(json_string_value(j)) > EVENTS_VALUE_CAP) {
        *cut = true;
        events_shorten(j, EVENTS_VALUE_CAP);
    }
    return j;
}

/* One commonHeaders list being built: entries capped at EVENTS_VALUE_CAP bytes each and
 * EVENTS_LIST_CAP bytes together; *cut is set when anything is left out. */
typedef struct events_list {
    json_t *arr;
    size_t bytes;
    bool *cut;
} events_list;

static void append_entry(events_list *l, const char *start, const char *end)
{
    while (start < end && (*start == ' ' || *start == '\t')) start++;
    while (end > start && (end[-1] == ' ' || end[-1] == '\t')) end--;
    if (end == start) return;
    size_t n = events_capped_len(start, (size_t)(end - start), l->cut);
    if (l->bytes + n > EVENTS_LIST_CAP) {
        *l->cut = true;
        return;
    }
    l->bytes += n;
    char *s = util_strndup(start, n);
    event_jappend(l->arr, events_capped_str(s, n, l->cut));
    free(s);
}

/* Splits an address-list field value at top-level commas (outside quoted strings, comments,
 * angle brackets and groups) into arr, each entry trimmed. Written by hand because
 * message.h yields bare addr-specs while SES's commonHeaders keep each entry as written,
 * display name included ("Ann <ann@example.test>"). */
static void add_address_entries(events_list *arr, const char *value)
{
    const char *start = value;
    bool quoted = false, angle = false, group = false;
    int paren = 0;
    for (const char *p = value;; p++) {
        char c = *p;
        if (c == '\0' || (c == ',' && !quoted && !paren && !angle && !group)) {
            append_entry(arr, start, p);
            if (c == '\0') break;
            start = p + 1;
            continue;
        }
        if (quoted) {
            if (c == '\\' && p[1]) p++;
            else if (c == '"') quoted = false;
        } else if (paren) {
            if (c == '\\' && p[1]) p++;
            else if (c == '(') paren++;
            else if (c == ')') paren--;
        } else if (c == '"') {
            quoted = true;
        } else if (c == '(') {
            paren = 1;
        } else if (c == '<') {
            angle = true;
        } else if (c == '>') {
            angle = false;
        } else if (c == ':' && !angle) {
            group = true;
        } else if (c == ';' && !angle) {
            group = false;
        }
    }
}

/* commonHeaders.<key>: every entry of every field called name; omitted when none. */
static void add_common_list(json_t *common, const char *key, const msg_headers *hs,
                            const char *name, bool *cut)
{
    events_list l = {event_jarr(), 0, cut};
    for (size_t i = 0; i < hs->n; i++)
        if (util_streq_ci(hs->h[i].name, name)) add_address_entries(&l, hs->h[i].value);
    if (json_array_size(l.arr) > 0) event_jset(common, key, l.arr);
    else json_decref(l.arr);
}

static void add_common_value(json_t *common, const char *key, const msg_headers *hs,
                             const char *name, bool *cut)
{
    const char *v = message_header_get(hs, name);
    if (v) event_jset(common, key, events_capped_str(v, strlen(v), cut));
}

/* The encoded mail object (malloc'd). */
static char *events_mail_dump(json_t *mail, const char *message_id)
{
    char *s = json_dumps(mail, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!s) util_fatal("events: cannot encode the mail object of %s", message_id);
    return s;
}

/* Keeps the first entry of each commonHeaders list (a late step of the size cap). */
static void events_trim_common(json_t *common)
{
    static const char *const lists[] = {"from", "to", "cc"};
    for (size_t i = 0; i < sizeof lists / sizeof *lists; i++) {
        json_t *a = json_object_get(common, lists[i]);
        while (a && json_array_size(a) > 1) json_array_remove(a, json_array_size(a) - 1);
    }
}

/* The JSON string j cut to at most max bytes of UTF-8 (jansson strings are valid UTF-8). */
static void events_shorten(json_t *j, size_t max)
{
    const char *v = json_string_value(j);
    size_t n = v ? strlen(v) : 0;
    if (n <= max) return;
    while (max > 0 && ((unsigned char)v[max] & 0xc0) == 0x80) max--;
    json_string_setn(j, v, max);
}

/* The last step of the size cap: values full of characters JSON escapes (\u0001 is six
 * bytes for one) can still pass it; every commonHeaders value is cut to 256 bytes. */
static void events_shrink_common(json_t *common)
{
    const char *key;
    json_t *val;
    json_object_foreach(common, key, val) {
        if (json_is_string(val)) events_shorten(val, EVENTS_SHRUNK_VALUE);
        for (size_t i = 0; json_is_array(val) && i < json_array_size(val); i++)
            events_shorten(json_array_get(val, i), EVENTS_SHRUNK_VALUE);
    }
}

/* Lower-case domain of the first From: address, else of the envelope sender; NULL if none. */
static char *from_domain(const msg_headers *hs, const char *source)
{
    char *dom = NULL;
    const char *from = message_header_get(hs, "From");
    if (from) {
        char **addrs = NULL;
        size_t n = message_parse_addresses(from, &addrs);
        if (n > 0 && *util_addr_domain(addrs[0])) dom = util_strdup(util_addr_domain(addrs[0]));
        message_addresses_free(addrs, n);
    }
    if (!dom && source && *util_addr_domain(source)) dom = util_strdup(util_addr_domain(source));
    if (dom) util_lowercase(dom);
    return dom;
}


const char *events_tag_check(const char *s, bool is_name)
{
    size_t n = strlen(s);
    if (n == 0) return "is empty";
    if (n > 256) return "is longer than 256 characters";
    if (is_name && strncmp(s, "ses:", 4) == 0) return "starts with \"ses:\" (reserved)";
    for (; *s; s++) {
        char c = *s;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.' || c == '@'))
            return "may hold only ASCII letters, digits, '_', '-', '.' and '@'";
    }
    return NULL;
}

char *events_mail_json(const events_mail_in *in)
{
    static const msg_headers no_headers = {0};
    const msg_headers *hs = in->headers ? in->headers : &no_headers;
    json_t *mail = event_jobj();
    event_jset(mail, "timestamp", event_jtime(in->timestamp_ms));
    event_jset(mail, "messageId", event_jstr(in->message_id));
    event_jset(mail, "source", event_jstr(in->source));
    event_jset(mail, "sendingAccountId", event_jstr(in->sending_account_id));
    event_jset(mail, "destination", event_jstr_array(in->destination, in->ndestination));

    json_t *headers = event_jarr();
    size_t total = 0;
    bool truncated = false;
    for (size_t i = 0; i < hs->n; i++) {
        size_t nlen = strlen(hs->h[i].name), vlen = strlen(hs->h[i].value);
        bool cut = false;
        size_t vcap = events_capped_len(hs->h[i].value, vlen, &cut);
        if (nlen > EVENTS_VALUE_CAP || total + nlen + vcap > EVENTS_HEADERS_CAP) {
            truncated = true;
            break;
        }
        truncated |= cut;
        total += nlen + vcap;
        json_t *h = event_jobj();
        event_jset(h, "name", event_jstr(hs->h[i].name));
        event_jset(h, "value", events_capped_str(hs->h[i].value, vlen, &cut));
        event_jappend(headers, h);
    }
    event_jset(mail, "headersTruncated", json_false());
    event_jset(mail, "headers", headers);

    json_t *common = event_jobj();
    add_common_list(common, "from", hs, "From", &truncated);
    add_common_list(common, "to", hs, "To", &truncated);
    add_common_list(common, "cc", hs, "Cc", &truncated);
    add_common_value(common, "messageId", hs, "Message-ID", &truncated);
    add_common_value(common, "subject", hs, "Subject", &truncated);
    add_common_value(common, "date", hs, "Date", &truncated);
    event_jset(mail, "commonHeaders", common);

    json_t *tags = event_jobj();
    for (size_t i = 0; i < in->ntags; i++) {       /* a repeated name collects its values */
        json_t *vals = json_object_get(tags, in->tag_names[i]);
        if (!vals) {
            vals = json_array();
            event_jset(tags, in->tag_names[i], vals);
        }
        event_jappend(vals, event_jstr(in->tag_values[i]));
    }
    event_jset(tags, "ses:configuration-set", event_tag(in->config_set));
    event_jset(tags, "ses:source-ip", event_tag(in->source_ip));
    char *dom = from_domain(hs, in->source);
    if (dom) event_jset(tags, "ses:from-domain", event_tag(dom));
    free(dom);
    event_jset(tags, "ses:caller-identity", event_tag("kiln"));
    event_jset(mail, "tags", tags);

    /* The size cap: headers go first, then every commonHeaders list but its first entry.
     * What is left over EVENTS_MAIL_CAP is destination (bounded by max_recipients). */
    if (truncated) event_jset(mail, "headersTruncated", json_true());
    char *s = events_mail_dump(mail, in->message_id);
    if (strlen(s) > EVENTS_MAIL_CAP) {
        free(s);
        event_jset(mail, "headersTruncated", json_true());
        event_jset(mail, "headers", event_jarr());
        s = events_mail_dump(mail, in->message_id);
    }
    if (strlen(s) > EVENTS_MAIL_CAP) {
        free(s);
        events_trim_common(common);
        s = events_mail_dump(mail, in->message_id);
    }
    if (strlen(s) > EVENTS_MAIL_CAP) {
        free(s);
        events_shrink_common(common);
        s = events_mail_dump(mail, in->message_id);
    }
    json_decref(mail);
    return s;
}

/* ------------------------------------------------------------------ destinations ---- */

typedef struct events_file {
    char *path;
    int fd;
    dev_t dev;
    ino_t ino;
    bool checked;       /* looked at the path during this drain */
    bool touched;       /* written during this drain: fdatasync it */
    bool dir_sync;      /* created or opened again: its directory needs an fsync */
    bool made_dirs;     /* ... and so do the directories above it (they were created) */
    bool started;       /* written during this drain, from size `start` */
    off_t start;
    strbuf pending;     /* lines of the current batch */
} events_file;

struct events {
    klog *lg;
    struct ev_loop *loop;   /* NULL: webhooks post nothing */
    struct curl_ev *curl;   /* the loop's HTTP client (NULL: webhooks post nothing) */
    const config *cfg;  /* the config the open files and the webhooks belong to */
    events_file *files;
    size_t nfiles;
    webhook **hooks;
    size_t nhooks;
    bool loaded;        /* files_done read from the spool */
    int64_t files_done; /* every row with id <= this was written to the files */
    int64_t deleted;    /* rows with id <= this were deleted */
    int64_t stats_legacy; /* rows with id <= this are counted when deleted (older kiln) */
    events_sync_ops sync;
    bool failing;       /* the last drain failed: repeats are logged at debug level */
};

static int events_sync_file(void *arg, int fd, const char *path)
{
    (void)arg;
    (void)path;
    return fdatasync(fd);
}

static int events_sync_dir(void *arg, const char *dir)
{
    (void)arg;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

void events_set_sync_ops(events *ev, const events_sync_ops *ops)
{
    if (ops) ev->sync = *ops;
    else ev->sync = (events_sync_ops){events_sync_file, events_sync_dir, NULL};
}

/* Errors of a drain: at error level the first time, at debug level while it keeps failing. */
static klog_level events_err_level(const events *ev)
{
    return ev->failing ? KLOG_DEBUG : KLOG_ERROR;
}

events *events_new(klog *lg)
{
    events *ev = util_calloc(1, sizeof *ev);
    ev->lg = lg;
    events_set_sync_ops(ev, NULL);
    return ev;
}

static void file_close(events_file *f)
{
    if (f->fd >= 0) close(f->fd);
    f->fd = -1;
}

static void files_free(events *ev)
{
    for (size_t i = 0; i < ev->nfiles; i++) {
        file_close(&ev->files[i]);
        free(ev->files[i].path);
        strbuf_free(&ev->files[i].pending);
    }
    free(ev->files);
    ev->files = NULL;
    ev->nfiles = 0;
}

static void hooks_free(events *ev)
{
    for (size_t i = 0; i < ev->nhooks; i++) webhook_free(ev->hooks[i]);
    free(ev->hooks);
    ev->hooks = NULL;
    ev->nhooks = 0;
}

void events_free(events *ev)
{
    if (!ev) return;
    files_free(ev);
    hooks_free(ev);
    free(ev);
}

void events_stats_legacy(events *ev, int64_t upto)
{
    ev->stats_legacy = upto;
}

void events_attach_loop(events *ev, struct ev_loop *loop, struct curl_ev *curl)
{
    ev->loop = loop;
    ev->curl = curl;
    ev->cfg = NULL;     /* the next drain builds the webhooks again, now with the loop */
}

static void config_changed(events *ev, spool *sp, const config *cfg)
{
    files_free(ev);
    hooks_free(ev);
    ev->cfg = cfg;
    for (size_t i = 0; i < cfg->nsets; i++)
        for (size_t j = 0; j < cfg->sets[i].nevents; j++) {
            const config_event_dest *d = &cfg->sets[i].events[j];
            if (d->type != CONFIG_EVENT_WEBHOOK) continue;
            bool dup = false;   /* the same URL twice in a set gets each event once */
            for (size_t k = 0; k < j; k++)
                if (cfg->sets[i].events[k].type == CONFIG_EVENT_WEBHOOK &&
                    strcmp(cfg->sets[i].events[k].url, d->url) == 0)
                    dup = true;
            if (dup) continue;
            ev->hooks = util_realloc(ev->hooks, (ev->nhooks + 1) * sizeof *ev->hooks);
            ev->hooks[ev->nhooks++] =
                webhook_new(ev->loop, ev->curl, ev->lg, sp, cfg->sets[i].name, d);
        }
}

void events_configure(events *ev, spool *sp, const config *cfg)
{
    if (ev->cfg != cfg) config_changed(ev, sp, cfg);
}

void events_each_webhook(const events *ev, events_webhook_fn *fn, void *arg)
{
    for (size_t i = 0; i < ev->nhooks; i++) {
        webhook_info info;
        webhook_get_info(ev->hooks[i], &info);
        fn(arg, &info);
    }
}

/* Deletes the rows every destination has. */
static int delete_done(events *ev, spool *sp)
{
    int64_t upto = ev->files_done;
    for (size_t i = 0; i < ev->nhooks; i++) {
        int64_t a = webhook_acked(ev->hooks[i]);
        if (a < upto) upto = a;
    }
    if (upto <= ev->deleted) return 0;
    /* Events are counted in the batch that writes them; rows an older kiln wrote are
     * counted in the batch that deletes them: each event counts exactly once. */
    int64_t legacy = upto < ev->stats_legacy ? upto : ev->stats_legacy;
    if ((legacy > ev->deleted && stats_count_outbox(sp, ev->deleted, legacy) < 0) ||
        spool_delete_events(sp, upto) < 0) {
        log_write(ev->lg, KLOG_ERROR, "event_drain_error", "op=delete error=%s",
                  log_q(ev->lg, spool_errmsg(sp)));
        return -1;
    }
    ev->deleted = upto;
    return 0;
}

static int file_open(events *ev, events_file *f)
{
    f->fd = open(f->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (f->fd < 0 && errno == ENOENT && util_mkdir_parents(f->path, 0750) == 0) {
        f->made_dirs = true;
        f->fd = open(f->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    }
    struct stat st;
    if (f->fd < 0 || fstat(f->fd, &st) != 0) {
        log_write(ev->lg, events_err_level(ev), "event_file_error", "path=%s op=open error=%s",
                  log_q(ev->lg, f->path), log_q(ev->lg, strerror(errno)));
        file_close(f);
        return -1;
    }
    f->dev = st.st_dev;
    f->ino = st.st_ino;
    /* created, or perhaps created (O_CREAT after a rotation): its directory entry is synced
     * before any row written to it is released */
    f->dir_sync = true;
    return 0;
}

/* fsyncs the directory holding f (and the ones above it when the drain created them):
 * 0, or -1 (logged). */
static int file_sync_dirs(events *ev, events_file *f)
{
    char *dir = util_strdup(f->path);
    int rc = 0;
    for (;;) {
        char *slash = strrchr(dir, '/');
        if (!slash) {   /* a path without a directory part: the working directory */
            if (ev->sync.dir(ev->sync.arg, ".") != 0) rc = -1;
            break;
        }
        if (slash == dir) slash[1] = '\0';   /* "/" */
        else *slash = '\0';
        if (ev->sync.dir(ev->sync.arg, dir) != 0) {
            rc = -1;
            break;
        }
        if (!f->made_dirs || strcmp(dir, "/") == 0) break;
    }
    if (rc != 0)
        log_write(ev->lg, events_err_level(ev), "event_file_error",
                  "path=%s op=fsync-directory dir=%s error=%s", log_q(ev->lg, f->path),
                  log_q(ev->lg, dir), log_q(ev->lg, strerror(errno)));
    else
        f->dir_sync = f->made_dirs = false;
    free(dir);
    return rc;
}

/* The open file for path, opened again if the path now names another file (rotated). */
static events_file *file_get(events *ev, const char *path)
{
    events_file *f = NULL;
    for (size_t i = 0; i < ev->nfiles; i++)
        if (strcmp(ev->files[i].path, path) == 0) f = &ev->files[i];
    if (!f) {
        ev->files = util_realloc(ev->files, (ev->nfiles + 1) * sizeof *ev->files);
        f = &ev->files[ev->nfiles++];
        memset(f, 0, sizeof *f);
        f->path = util_strdup(path);
        f->fd = -1;
        strbuf_init(&f->pending);
    }
    if (f->fd >= 0 && !f->checked) {
        struct stat st;
        if (stat(f->path, &st) != 0 || st.st_dev != f->dev || st.st_ino != f->ino)
            file_close(f);
    }
    f->checked = true;
    if (f->fd < 0 && file_open(ev, f) != 0) return NULL;
    return f;
}

/* Appends f->pending (its size before the drain's first write is noted: file_undo cuts
 * it back there). 0, or -1 (logged). */
static int file_write_pending(events *ev, events_file *f)
{
    if (f->pending.len == 0) return 0;
    if (!f->started) {
        struct stat st;
        if (fstat(f->fd, &st) != 0) {
            log_write(ev->lg, events_err_level(ev), "event_file_error", "path=%s op=stat error=%s",
                      log_q(ev->lg, f->path), log_q(ev->lg, strerror(errno)));
            return -1;
        }
        f->start = st.st_size;
        f->started = true;
    }
    size_t off = 0;
    while (off < f->pending.len) {
        ssize_t n = write(f->fd, f->pending.buf + off, f->pending.len - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            int e = n < 0 ? errno : EIO;
            log_write(ev->lg, events_err_level(ev), "event_file_error", "path=%s op=write error=%s",
                      log_q(ev->lg, f->path), log_q(ev->lg, strerror(e)));
            strbuf_reset(&f->pending);
            return -1;
        }
        off += (size_t)n;
    }
    strbuf_reset(&f->pending);
    f->touched = true;
    return 0;
}

/* The drain failed: every file it wrote is cut back to its size before the drain (no row
 * stays behind twice, no partial line), and closed (opened again next time). */
static void files_undo(events *ev)
{
    for (size_t i = 0; i < ev->nfiles; i++) {
        events_file *f = &ev->files[i];
        strbuf_reset(&f->pending);
        if (!f->started || f->fd < 0) continue;
        if (ftruncate(f->fd, f->start) != 0)
            log_write(ev->lg, KLOG_ERROR, "event_file_error",
                      "path=%s op=truncate error=%s note=\"events of this drain may be written "
                      "again\"", log_q(ev->lg, f->path), log_q(ev->lg, strerror(errno)));
        file_close(f);
    }
}

typedef struct drain_row {
    int64_t id;
    char *set;
    char *json;
} drain_row;

typedef struct drain_batch {
    drain_row *v;
    size_t n, cap;
} drain_batch;

static void collect_row(void *arg, int64_t id, const char *set, const char *json)
{
    drain_batch *b = arg;
    if (b->n == b->cap) {
        b->cap = b->cap ? 2 * b->cap : 64;
        b->v = util_realloc(b->v, b->cap * sizeof *b->v);
    }
    b->v[b->n].id = id;
    b->v[b->n].set = util_strdup(set ? set : "");
    b->v[b->n].json = util_strdup(json ? json : "");
    b->n++;
}

static void batch_free(drain_batch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        free(b->v[i].set);
        free(b->v[i].json);
    }
    free(b->v);
    b->v = NULL;
    b->n = b->cap = 0;
}

/* Queues one row into the pending buffers of its set's files. 1 if it goes to at least one
 * file, 0 if it is dropped (unknown set, or no file destination), -1 if a file won't open. */
static int route_row(events *ev, const config *cfg, const drain_row *r)
{
    const config_set *set = config_find_set(cfg, r->set);
    if (!set) {
        log_write(ev->lg, KLOG_WARNING, "event_dropped", "id=%lld set=%s reason=%s",
                  (long long)r->id, log_q(ev->lg, r->set),
                  log_q(ev->lg, "configuration set no longer in the config"));
        return 0;
    }
    int routed = 0;
    for (size_t j = 0; j < set->nevents; j++) {
        if (set->events[j].type != CONFIG_EVENT_FILE) continue;
        events_file *f = file_get(ev, set->events[j].path);
        if (!f) return -1;
        strbuf_puts(&f->pending, r->json);
        strbuf_append(&f->pending, "\n", 1);
        routed = 1;
    }
    return routed;
}

int events_drain(events *ev, spool *sp, const config *cfg)
{
    if (!ev->loaded) {
        char *v = NULL;
        if (spool_kv_get(sp, EVENTS_FILES_KEY, &v) < 0) {
            log_write(ev->lg, KLOG_ERROR, "event_drain_error", "op=read error=%s",
                      log_q(ev->lg, spool_errmsg(sp)));
            return -1;
        }
        ev->files_done = v ? strtoll(v, NULL, 10) : 0;
        free(v);
        ev->loaded = true;
    }
    events_configure(ev, sp, cfg);
    for (size_t i = 0; i < ev->nhooks; i++) webhook_poll(ev->hooks[i]);
    for (size_t i = 0; i < ev->nfiles; i++) {
        ev->files[i].checked = ev->files[i].touched = ev->files[i].started = false;
        strbuf_reset(&ev->files[i].pending);
    }
    int written = 0, rc = 0;
    int64_t after = ev->files_done;
    bool any = false;
    size_t bytes = 0;   /* event text read by this drain: at most EVENTS_DRAIN_BYTES */
    for (;;) {
        drain_batch b = {NULL, 0, 0};
        if (spool_each_event_bytes(sp, after, EVENTS_DRAIN_BATCH, EVENTS_DRAIN_BYTES - bytes,
                                   collect_row, &b) < 0) {
            log_write(ev->lg, KLOG_ERROR, "event_drain_error", "op=read error=%s",
                      log_q(ev->lg, spool_errmsg(sp)));
            batch_free(&b);
            rc = -1;
            break;
        }
        for (size_t i = 0; i < b.n && rc == 0; i++) {
            bytes += strlen(b.v[i].json);
            int r = route_row(ev, cfg, &b.v[i]);
            if (r < 0) rc = -1;
            written += r > 0;
            after = b.v[i].id;
            any = true;
        }
        for (size_t i = 0; i < ev->nfiles && rc == 0; i++)
            if (ev->files[i].fd >= 0 && file_write_pending(ev, &ev->files[i]) != 0) rc = -1;
        size_t got = b.n;
        batch_free(&b);
        if (rc != 0 || bytes >= EVENTS_DRAIN_BYTES) break;   /* the rest: next drain */
        if (got < EVENTS_DRAIN_BATCH) break;
    }
    /* durable before released: the file's data, then its directory entry if new */
    for (size_t i = 0; i < ev->nfiles && rc == 0; i++) {
        events_file *f = &ev->files[i];
        if (!f->touched || f->fd < 0) continue;
        if (ev->sync.file(ev->sync.arg, f->fd, f->path) != 0) {
            log_write(ev->lg, events_err_level(ev), "event_file_error",
                      "path=%s op=fdatasync error=%s", log_q(ev->lg, f->path),
                      log_q(ev->lg, strerror(errno)));
            rc = -1;
        } else if (f->dir_sync && file_sync_dirs(ev, f) != 0) {
            rc = -1;
        }
    }
    /* the progress and the deletes are kept writes: a failed batch does not lose them */
    spool_keep_begin(sp);
    if (rc != 0) {
        files_undo(ev);
        delete_done(ev, sp);
    } else if (any) {
        char v[32];
        snprintf(v, sizeof v, "%lld", (long long)after);
        if (spool_kv_put(sp, EVENTS_FILES_KEY, v) < 0) {
            log_write(ev->lg, KLOG_ERROR, "event_drain_error", "op=save error=%s",
                      log_q(ev->lg, spool_errmsg(sp)));
            rc = -1;
        } else {
            ev->files_done = after;
        }
    }
    if (rc == 0 && delete_done(ev, sp) < 0) rc = -1;
    spool_keep_end(sp);
    if (rc != 0) {
        ev->failing = true;
        return -1;
    }
    if (ev->failing)
        log_write(ev->lg, KLOG_INFO, "event_drain_recovered", "written=%d", written);
    ev->failing = false;
    return written;
}
