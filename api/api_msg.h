/* api_msg.h — a message of SendEmail or SendBulkEmail as far as it goes without kilnd's
 * state: built (Content.Simple through api/mime.h, a stored template rendered by
 * api/template.h, Content.Raw decoded), its configuration set, recipients and tags, and its
 * header section checked with SMTP submission's limits and identity rules (mta/policy.h).
 * What comes after (the recipients against the suppression list, the send rate and the 24 h
 * quota, then the spool) needs the daemon and stays in api/api_send.c.
 *
 * Everything here reads only its arguments and the env (the config, the key, the validated
 * input; a stored template through env->template_get), so it may run on a worker thread
 * (api_int.h api_offload) while the loop leaves the call alone: api/api_send.c renders
 * templates there, as a part may be 10 MB. A refusal is an api_msg_err: SES's
 * status, error type and message, and the BulkEmailEntryResult Status of the same refusal. */
#ifndef KILN_API_MSG_H
#define KILN_API_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "base/config.h"
#include "base/util.h"
#include "mta/message.h"
#include "mta/msgtags.h"
#include "mta/policy.h"

/* Why a message was refused: SES's error (status, type) and the BulkEmailEntryResult
 * Status the same refusal has in SendBulkEmail. */
typedef struct api_msg_err {
    int status;
    const char *type;
    const char *bulk;
    char *msg;
    bool rate, daily;             /* refused by the send rate / the 24 h quota */
} api_msg_err;

/* One message on its way to accept.c. */
typedef struct api_msg {
    char *mail_from;              /* addr-spec */
    char **rcpts;
    size_t nrcpts;
    policy_rcpt_verdict *verdicts;
    unsigned reserved;            /* 24 h slots reserved */
    const char *set;              /* a name of the env's config's sets */
    strbuf data;
    msgtags tags;                 /* EmailTags or X-SES-MESSAGE-TAGS, checked */
} api_msg;

/* Content.Raw.Data decoded beforehand (mime_raw_decode's answer for the string b64): taken
 * by the build of the raw message whose Data is that very string, else decoded there. */
typedef struct api_msg_raw {
    const char *b64;
    char *msg;                    /* len bytes, or NULL with err */
    size_t len;
    char *err;
} api_msg_raw;

/* A stored template: 0 with *subject, *text, *html (malloc'd or NULL), 1 if there is none,
 * -1 with *err (malloc'd) if it could not be read. */
typedef int (*api_msg_template_fn)(void *arg, const char *name, char **subject, char **text,
                                   char **html, char **err);

/* What a message is built and checked against. */
typedef struct api_msg_env {
    const config *cfg;
    const config_access_key *key; /* the authenticated key (its scope); NULL: none */
    const char *key_id;
    json_t *in;                   /* the call's validated input */
    int64_t now_ms;               /* the request's time (Date:) */
    api_msg_raw *raw;             /* NULL: nothing decoded beforehand */
    api_msg_template_fn template_get;   /* needed for Content.Template and SendBulkEmail */
    void *template_arg;
} api_msg_env;

void api_msg_init(api_msg *m);
void api_msg_free(api_msg *m);
void api_msg_fail(api_msg_err *e, int status, const char *type, const char *bulk,
                  const char *fmt, ...) __attribute__((format(printf, 5, 6)));
void api_msg_rejected(api_msg_err *e, const char *text);
/* An SMTP reply of mta/policy.c without its codes and "Message rejected: ". */
const char *api_msg_reply_text(const char *reply);

/* The steps SendBulkEmail takes one by one (each 0, or -1 with e set). */
int api_msg_add_list(api_msg *m, json_t *list, const char *what, api_msg_err *e);
int api_msg_add_tags(api_msg *m, json_t *tags, const char *what, api_msg_err *e);
int api_msg_set(const api_msg_env *env, api_msg *m, const char *name, const msg_headers *hs,
                api_msg_err *e);
int api_msg_build_template(const api_msg_env *env, api_msg *m, const char *from,
                           json_t *dest, const char *name, const json_t *data, api_msg_err *e);
int api_msg_check_content(const api_msg_env *env, api_msg *m, bool rcpts_from_headers,
                          const char *from_param, api_msg_err *e);
/* TemplateData (a JSON object in a string) merged over by replacement data (bulk). */
json_t *api_msg_template_data(const char *text, const char *over, const char *what,
                              api_msg_err *e);

/* SendEmail up to its recipients' checks, in SES's order: one kind of content, the message
 * built, its configuration set, header tags, Destination, the header section and
 * identities, Bcc: removed, EmailTags. 0 with m ready, or -1 with e. */
int api_msg_email(const api_msg_env *env, api_msg *m, api_msg_err *e);

/* One entry of SendBulkEmail (env->in is the call's input): DefaultContent's template
 * rendered with its TemplateData merged over by the entry's replacement data, to the entry's
 * Destination, with DefaultEmailTags and the entry's ReplacementTags. 0 or -1 with e. */
int api_msg_bulk_entry(const api_msg_env *env, json_t *entry, api_msg *m, api_msg_err *e);

/* A stored template read beforehand (on the loop), for a worker's env: template_get =
 * api_msg_tpl_get, template_arg = the api_msg_tpl. rc as api_msg_template_fn answers for
 * `name` (any other name: 1); the strings are copied out, the struct is not changed. */
typedef struct api_msg_tpl {
    char *name;
    int rc;
    char *subject, *text, *html;  /* rc 0 */
    char *err;                    /* rc -1 */
} api_msg_tpl;
int api_msg_tpl_get(void *arg, const char *name, char **subject, char **text, char **html,
                    char **err);
void api_msg_tpl_clear(api_msg_tpl *t);

#endif
