/* privdrop.h — kilnd's least privilege (server.user / server.group): who kilnd becomes,
 * the files it hands over to that user before it drops root, and the drop itself.
 *
 * Start-up order (daemon/daemon.c): config -> privdrop_resolve -> privdrop_prepare (as root:
 * creates the spool directory, the log file and every event file destination, with the
 * parent directories kiln creates, all owned by the user) -> log, spool, TLS key,
 * listeners, control socket (still root) -> privdrop_handover (chowns the spool's files
 * and the control socket) -> privdrop_drop (setgroups, setgid, setuid; verified: root
 * cannot be regained). Everything after, reload included, runs as the user: a reload
 * whose event files that user cannot open is refused and says so
 * (privdrop_check_event_files), and the TLS key must stay readable by the user.
 *
 * Rules: started as root, server.user is required and must not be root. Started as
 * another user, server.user must be absent or name that user (and server.group, if set,
 * its current group): only root can change user. Every error names the key. */
#ifndef KILN_PRIVDROP_H
#define KILN_PRIVDROP_H

#include <stdbool.h>
#include <sys/types.h>

#include "base/config.h"

typedef struct privdrop {
    bool drop;          /* started as root: become uid/gid */
    uid_t uid;
    gid_t gid;
    char *user;         /* malloc'd; NULL when !drop */
    char *group;
} privdrop;

/* Fills pd from cfg and the process's identity. 0, or -1 with *err (malloc'd). */
int privdrop_resolve(const config *cfg, privdrop *pd, char **err);
/* As root: creates and hands over the spool directory, the log file and the event files. */
int privdrop_prepare(const config *cfg, const privdrop *pd, char **err);
/* As root, after the spool is open and the sockets are bound: chowns the files in the
 * spool directory and the control socket to the user. */
int privdrop_handover(const config *cfg, const privdrop *pd, char **err);
/* Reload: every file event destination of cfg can be opened for appending by the user
 * kilnd runs as now (missing files and their parent directories are created). 0, or -1
 * with *err naming the set and the path. */
int privdrop_check_event_files(const config *cfg, char **err);
/* Becomes the user for good. 0, or -1 with *err. */
int privdrop_drop(const privdrop *pd, char **err);
void privdrop_clear(privdrop *pd);

#endif
