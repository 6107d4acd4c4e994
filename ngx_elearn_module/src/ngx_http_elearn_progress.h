
/*
 * elearn progress: video progress reports and resume (contract section
 * 4, issue 5).  See ngx_http_elearn_progress.c.
 */


#ifndef _NGX_HTTP_ELEARN_PROGRESS_H_INCLUDED_
#define _NGX_HTTP_ELEARN_PROGRESS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_elearn_module.h"


#define NGX_HTTP_ELEARN_PROGRESS_TOPIC  "elearn.progress"


/*
 * elearn_progress_completion: a ratio in (0, 1], "0.9", kept in parts
 * per million.
 */
char *ngx_http_elearn_progress_set_ratio(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

/* elearn_progress_ack queued | durable; the error names the choices */
char *ngx_http_elearn_progress_set_ack(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

/* Sets the defaults of the progress directives and checks them. */
char *ngx_http_elearn_progress_init_conf(ngx_conf_t *cf,
    ngx_http_elearn_main_conf_t *emcf);


#endif /* _NGX_HTTP_ELEARN_PROGRESS_H_INCLUDED_ */
