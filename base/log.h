/* log.h — one line per event in logfmt (ts=… level=… event=… key=value …), to stderr or a file.
 * Values that may contain spaces or quotes go through log_q(), which quotes and escapes them. */
#ifndef KILN_LOG_H
#define KILN_LOG_H

#include <stdbool.h>

typedef enum { KLOG_DEBUG = 0, KLOG_INFO, KLOG_WARNING, KLOG_ERROR } klog_level;

typedef struct klog klog;

/* target: "stderr" or a file path (appended). Returns NULL and sets *err on failure. */
klog *log_open(const char *target, klog_level level, char **err);
void log_close(klog *lg);
void log_set_level(klog *lg, klog_level level);
bool log_enabled(const klog *lg, klog_level level);
/* "debug" | "info" | "warning" | "error" -> level; -1 if unknown. */
int log_level_parse(const char *s);
const char *log_level_name(klog_level level);
/* Writes "ts=<iso8601> level=<lvl> event=<event> <fmt…>\n". fmt is the key=value tail. */
void log_write(klog *lg, klog_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Quoted, escaped copy of s for use as a logfmt value; valid until 8 more log_q calls on lg. */
const char *log_q(klog *lg, const char *s);

#endif
