/* escape: request data written into log lines, so that no client can split, forge or break one. */
#ifndef PERFCGI_ESCAPE_H
#define PERFCGI_ESCAPE_H

#include <stddef.h>

/* Writes in (NULL = "") at out, escaped for a quoted field of a text line: control
 * bytes as \xHH, backslash and double quote as \\ and \", other bytes as they are.
 * At most max bytes, cut between sequences; returns how many (no NUL). */
size_t escape_text(char *out, size_t max, const char *in);

/* The same for the inside of a JSON string: \" and \\, control bytes and DEL as
 * \u00XX, and each byte that is not part of valid UTF-8 as %XX (as in a URI), so
 * that any input comes out as valid JSON text; never cuts a sequence. */
size_t escape_json(char *out, size_t max, const char *in);

#endif
