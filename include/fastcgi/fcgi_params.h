/* fcgi_params: the FastCGI parameters a front end sends, read into the request the endpoints see. */
#ifndef PERFCGI_FCGI_PARAMS_H
#define PERFCGI_FCGI_PARAMS_H

#include <stddef.h>

#include "core/exchange.h"
#include "fastcgi/fcgi_codec.h"

/* Fills req from FastCGI parameters (a NULL-terminated "NAME=value" array).
 * req's strings point into envp, or into path_buf when the path had to be
 * put together: both must outlive req. */
void fcgi_params_to_request(struct request *req, char **envp, char *path_buf, size_t path_len);
/* The same from the codec's decoded pairs, whose values are NUL-terminated:
 * names are matched by length, with no "NAME=" string to scan. */
void fcgi_pairs_to_request(struct request *req, const struct fcgi_pair *pairs, size_t npairs, char *path_buf,
                           size_t path_len);

#endif
