/* auth.h — SMTP AUTH (RFC 4954) for the submission server: base64, the SASL PLAIN
 * (RFC 4616) and LOGIN responses, and password verification against submission.auth's
 * crypt(3) hashes ($y$ yescrypt, $6$/$5$ SHA-crypt, $2b$ bcrypt — whatever libcrypt knows)
 * and against SES SMTP passwords of api.access_keys (the user name is the key id, the
 * password SES's derivation of its secret for server.region, as an application's SES SMTP
 * settings have them). Pure functions: the SMTP dialogue (334 prompts, "*" to cancel,
 * 235/535 replies) is smtp_server's. */
#ifndef KILN_AUTH_H
#define KILN_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#include "base/config.h"

/* The server's AUTH LOGIN prompts ("Username:" and "Password:" in base64). */
#define AUTH_LOGIN_PROMPT_USER "334 VXNlcm5hbWU6"
#define AUTH_LOGIN_PROMPT_PASS "334 UGFzc3dvcmQ6"

/* Standard base64 (RFC 4648, with padding) of n bytes; malloc'd, NUL-terminated. */
char *auth_b64_encode(const void *p, size_t n);
/* Decodes strict standard base64: length a multiple of 4, only the alphabet, at most two
 * '=' and only at the end, no white space. Returns the malloc'd bytes with a NUL appended
 * (not counted in *len), or NULL if b64 is not valid base64. "" decodes to 0 bytes. */
char *auth_b64_decode(const char *b64, size_t *len);

/* A SASL PLAIN response "authzid NUL authcid NUL passwd" in base64. The authzid must be
 * empty or equal to the authcid (kiln does not let one user act as another); authcid and
 * passwd must not be empty. 0 and malloc'd *user, *pass on success; -1 (nothing allocated)
 * on bad base64 or format. */
int auth_decode_plain(const char *b64, char **user, char **pass);
/* One AUTH LOGIN response (user name or password) in base64: the malloc'd text, or NULL if
 * it is not valid base64, is empty, or contains a NUL byte. */
char *auth_decode_login(const char *b64);

/* crypt_rn of pass with setting (a complete hash), compared in constant time against want;
 * want NULL: the same work, then false (the decoy for unknown users). Thread-safe: the
 * crypt_data is the caller's own heap block, wiped afterwards. */
bool auth_crypt_check(const char *pass, const char *setting, const char *want);
/* The submission.auth entry of user, or NULL. */
const config_auth_user *auth_find_user(const config *cfg, const char *user);
/* The hash to run user's password against: the user's own (*known true), or for an unknown
 * user the first user's hash as decoy (*known false; same method and cost as that user, so
 * a deployment whose users share one method and cost shows no timing difference). NULL only
 * when cfg->nauth is 0. */
const char *auth_check_hash(const config *cfg, const char *user, bool *known);

/* AUTH's argument "MECHANISM [initial-response]" (RFC 4954 4): 0 with *mech (malloc'd) and
 * *initial (malloc'd, "=" turned into "", or NULL when there is none); -1 (nothing
 * allocated) when blanks follow the mechanism but no response does, or the response is
 * followed by more words. */
int auth_split_command(const char *arg, char **mech, char **initial);

/* True if user is one of cfg->auth and pass matches its password_hash. The hash comparison
 * is constant-time, and an unknown user costs one hash computation like a known one, so
 * timing tells neither which users exist nor how much of a hash matched. */
bool auth_verify(const config *cfg, const char *user, const char *pass);
/* True if SMTP AUTH is on: submission.auth has users or api.access_keys has keys. */
bool auth_enabled(const config *cfg);
/* True if pass is key's SES SMTP password for region (sigv4_ses_smtp_password of its
 * secret), compared in constant time. Cheap (six HMACs): checked on the loop. */
bool auth_access_key_check(const config_access_key *key, const char *region, const char *pass);
/* The access key named user if pass is its SES SMTP password for cfg->region, else NULL. */
const config_access_key *auth_access_key_match(const config *cfg, const char *user,
                                               const char *pass);

/* True if password_hash is a complete "$id$..." hash libcrypt can check (for validating
 * the config): not a bare salt, not a legacy DES string, not a method libcrypt lacks. */
bool auth_hash_usable(const char *password_hash);

#endif
