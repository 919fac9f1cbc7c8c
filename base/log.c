/* log.c — logfmt lines (ts=… level=… event=…) to stderr or an appended file.
 * Hand-written: a logfmt writer is one function; no Debian library does just this. */
#include "base/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

#define LOG_QBUFS 8

struct klog {
    FILE *fp;
    bool owned;
    klog_level level;
    char *qbuf[LOG_QBUFS];
    int qnext;
};

static const char *const level_names[] = {"debug", "info", "warning", "error"};

klog *log_open(const char *target, klog_level level, char **err)
{
    klog *lg = util_calloc(1, sizeof *lg);
    lg->level = level;
    if (!target || strcmp(target, "stderr") == 0) {
        lg->fp = stderr;
    } else {
        lg->fp = fopen(target, "a");
        if (!lg->fp) {
            if (err) *err = util_asprintf("cannot open log file %s: %s", target, strerror(errno));
            free(lg);
            return NULL;
        }
        lg->owned = true;
        setvbuf(lg->fp, NULL, _IOLBF, 0);
    }
    return lg;
}

void log_close(klog *lg)
{
    if (!lg) return;
    if (lg->owned) fclose(lg->fp);
    for (int i = 0; i < LOG_QBUFS; i++) free(lg->qbuf[i]);
    free(lg);
}

void log_set_level(klog *lg, klog_level level) { lg->level = level; }

bool log_enabled(const klog *lg, klog_level level) { return lg && level >= lg->level; }

int log_level_parse(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(s, level_names[i]) == 0) return i;
    return -1;
}

const char *log_level_name(klog_level level) { return level_names[level]; }

void log_write(klog *lg, klog_level level, const char *event, const char *fmt, ...)
{
    if (!log_enabled(lg, level)) return;
    char ts[32];
    util_iso8601(util_wall_ms(), ts);
    strbuf sb;
    strbuf_init(&sb);
    strbuf_printf(&sb, "ts=%s level=%s event=%s", ts, level_names[level], event);
    if (fmt && *fmt) {
        va_list ap;
        va_start(ap, fmt);
        char *tail = util_vasprintf(fmt, ap);
        va_end(ap);
        strbuf_puts(&sb, " ");
        strbuf_puts(&sb, tail);
        free(tail);
    }
    strbuf_puts(&sb, "\n");
    fwrite(sb.buf, 1, sb.len, lg->fp);
    fflush(lg->fp);
    strbuf_free(&sb);
}

const char *log_q(klog *lg, const char *s)
{
    if (!s) s = "";
    strbuf sb;
    strbuf_init(&sb);
    strbuf_puts(&sb, "\"");
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\') {
            strbuf_append(&sb, "\\", 1);
            strbuf_append(&sb, p, 1);
        } else if (c == '\n') {
            strbuf_puts(&sb, "\\n");
        } else if (c == '\r') {
            strbuf_puts(&sb, "\\r");
        } else if (c < 0x20 || c == 0x7f) {
            strbuf_printf(&sb, "\\x%02x", c);
        } else {
            strbuf_append(&sb, p, 1);
        }
    }
    strbuf_puts(&sb, "\"");
    free(lg->qbuf[lg->qnext]);
    lg->qbuf[lg->qnext] = strbuf_steal(&sb);
    const char *r = lg->qbuf[lg->qnext];
    lg->qnext = (lg->qnext + 1) % LOG_QBUFS;
    return r;
}
