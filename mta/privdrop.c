/* privdrop.c — see privdrop.h. Postfix and OpenSMTPD do the same dance: everything that
 * needs root (port binding, reading the TLS key, creating files in root-owned directories)
 * happens first, then the process becomes an unprivileged user with setgroups/setgid/setuid
 * and checks that setuid(0) now fails. Files are created with the modes kiln uses
 * elsewhere (directories 0750, the spool 0700, files 0640). */
/* getresuid, getresgid: _GNU_SOURCE comes from configure */
#include "mta/privdrop.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/util.h"

void privdrop_clear(privdrop *pd)
{
    free(pd->user);
    free(pd->group);
    pd->user = pd->group = NULL;
}

int privdrop_resolve(const config *cfg, privdrop *pd, char **err)
{
    memset(pd, 0, sizeof *pd);
    uid_t euid = geteuid();
    if (!cfg->user) {
        if (euid == 0) {
            *err = util_asprintf("%s: server.user is required when kilnd starts as root "
                                 "(kilnd binds its listeners, then runs as that user; "
                                 "e.g. user: kiln)", cfg->path);
            return -1;
        }
        if (cfg->group) {
            *err = util_asprintf("%s: server.group needs server.user", cfg->path);
            return -1;
        }
        return 0;
    }
    struct passwd *pw = getpwnam(cfg->user);
    if (!pw) {
        *err = util_asprintf("%s: server.user: no such user '%s'", cfg->path, cfg->user);
        return -1;
    }
    uid_t uid = pw->pw_uid;
    gid_t gid = pw->pw_gid;
    char *user = util_strdup(pw->pw_name);
    char *group = NULL;
    if (cfg->group) {
        struct group *gr = getgrnam(cfg->group);
        if (!gr) {
            *err = util_asprintf("%s: server.group: no such group '%s'", cfg->path, cfg->group);
            free(user);
            return -1;
        }
        gid = gr->gr_gid;
        group = util_strdup(gr->gr_name);
    } else {
        struct group *gr = getgrgid(gid);
        group = gr ? util_strdup(gr->gr_name) : util_asprintf("%u", (unsigned)gid);
    }
    if (euid == 0 && (uid == 0 || gid == 0)) {
        *err = util_asprintf("%s: server.%s names %s (id 0); name an unprivileged account "
                             "for kilnd to run as", cfg->path, uid == 0 ? "user" : "group",
                             uid == 0 ? "root" : "the root group");
        free(user);
        free(group);
        return -1;
    }
    if (euid != 0 && (uid != euid || (cfg->group && gid != getegid()))) {
        struct passwd *me = getpwuid(euid);
        *err = util_asprintf("%s: server.%s is %s but kilnd runs as %s (uid %u, gid %u); only "
                             "root can change user: start kilnd as root, or as that user, or "
                             "remove server.user", cfg->path, uid != euid ? "user" : "group",
                             uid != euid ? cfg->user : cfg->group, me ? me->pw_name : "?",
                             (unsigned)euid, (unsigned)getegid());
        free(user);
        free(group);
        return -1;
    }
    pd->drop = euid == 0;
    pd->uid = uid;
    pd->gid = gid;
    pd->user = user;
    pd->group = group;
    return 0;
}

static int privdrop_fail(char **err, const char *what, const char *path)
{
    *err = util_asprintf("%s %s: %s (kilnd runs as root at this point)", what, path,
                         strerror(errno));
    return -1;
}

/* mkdir -p path with mode; every directory it creates is handed to the user (and the last
 * one, the target, too when own_last). */
static int privdrop_mkdirs(const privdrop *pd, const char *path, mode_t mode, bool own_last,
                           char **err)
{
    char *p = util_strdup(path);
    size_t n = strlen(p);
    while (n > 1 && p[n - 1] == '/') p[--n] = '\0';
    for (char *s = p + 1;; s++) {
        bool last = *s == '\0';
        if (!last && *s != '/') continue;
        *s = '\0';
        if (mkdir(p, mode) == 0) {
            if (chown(p, pd->uid, pd->gid) != 0) {
                int rc = privdrop_fail(err, "cannot hand over the directory", p);
                free(p);
                return rc;
            }
        } else if (errno != EEXIST) {
            int rc = privdrop_fail(err, "cannot create the directory", p);
            free(p);
            return rc;
        } else if (last && own_last && chown(p, pd->uid, pd->gid) != 0) {
            int rc = privdrop_fail(err, "cannot hand over the directory", p);
            free(p);
            return rc;
        }
        if (last) break;
        *s = '/';
    }
    free(p);
    return 0;
}

/* Creates the file (and its missing parents) if needed and hands it to the user. */
static int privdrop_file(const privdrop *pd, const char *path, char **err)
{
    char *dir = util_strdup(path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        if (privdrop_mkdirs(pd, dir, 0750, false, err) != 0) {
            free(dir);
            return -1;
        }
    }
    free(dir);
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (fd < 0) return privdrop_fail(err, "cannot create", path);
    int rc = fchown(fd, pd->uid, pd->gid);
    int e = errno;
    close(fd);
    errno = e;
    return rc == 0 ? 0 : privdrop_fail(err, "cannot hand over", path);
}

int privdrop_prepare(const config *cfg, const privdrop *pd, char **err)
{
    if (!pd->drop) return 0;
    if (privdrop_mkdirs(pd, cfg->spool, 0700, true, err) != 0) return -1;
    if (strcmp(cfg->log, "stderr") != 0 && privdrop_file(pd, cfg->log, err) != 0) return -1;
    for (size_t i = 0; i < cfg->nsets; i++)
        for (size_t j = 0; j < cfg->sets[i].nevents; j++)
            if (cfg->sets[i].events[j].type == CONFIG_EVENT_FILE &&
                privdrop_file(pd, cfg->sets[i].events[j].path, err) != 0)
                return -1;
    return 0;
}

int privdrop_check_event_files(const config *cfg, char **err)
{
    for (size_t i = 0; i < cfg->nsets; i++)
        for (size_t j = 0; j < cfg->sets[i].nevents; j++) {
            const config_event_dest *d = &cfg->sets[i].events[j];
            if (d->type != CONFIG_EVENT_FILE) continue;
            int fd = open(d->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
            if (fd < 0 && errno == ENOENT && util_mkdir_parents(d->path, 0750) == 0)
                fd = open(d->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
            if (fd < 0) {
                int e = errno;     /* getpwuid may change errno */
                struct passwd *me = getpwuid(geteuid());
                *err = util_asprintf("%s: configuration set %s: cannot open the event file %s "
                                     "as user %s: %s; nothing was reloaded", cfg->path,
                                     cfg->sets[i].name, d->path, me ? me->pw_name : "?",
                                     strerror(e));
                return -1;
            }
            close(fd);
        }
    return 0;
}

int privdrop_handover(const config *cfg, const privdrop *pd, char **err)
{
    if (!pd->drop) return 0;
    DIR *d = opendir(cfg->spool);
    if (!d) return privdrop_fail(err, "cannot read the spool directory", cfg->spool);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
        if (fchownat(dirfd(d), de->d_name, pd->uid, pd->gid, AT_SYMLINK_NOFOLLOW) != 0) {
            char *p = util_asprintf("%s/%s", cfg->spool, de->d_name);
            int rc = privdrop_fail(err, "cannot hand over", p);
            free(p);
            closedir(d);
            return rc;
        }
    }
    closedir(d);
    if (lchown(cfg->control_socket, pd->uid, pd->gid) != 0)
        return privdrop_fail(err, "cannot hand over the control socket", cfg->control_socket);
    return 0;
}

int privdrop_drop(const privdrop *pd, char **err)
{
    if (!pd->drop) return 0;
    if (setgroups(1, &pd->gid) != 0 || setgid(pd->gid) != 0 || setuid(pd->uid) != 0) {
        *err = util_asprintf("cannot become server.user %s (uid %u, gid %u): %s", pd->user,
                             (unsigned)pd->uid, (unsigned)pd->gid, strerror(errno));
        return -1;
    }
    uid_t r, e, s;
    gid_t rg, eg, sg;
    if (setuid(0) == 0 || seteuid(0) == 0 || getresuid(&r, &e, &s) != 0 ||
        getresgid(&rg, &eg, &sg) != 0 || r != pd->uid || e != pd->uid || s != pd->uid ||
        rg != pd->gid || eg != pd->gid || sg != pd->gid) {
        *err = util_asprintf("dropping to server.user %s left a way back to root; refusing "
                             "to run", pd->user);
        return -1;
    }
    return 0;
}
