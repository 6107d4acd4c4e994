
/*
 * elearn event: the one adapter that puts a library-owned socket on
 * nginx's event loop.  See ngx_http_elearn_event.c.
 */


#ifndef _NGX_HTTP_ELEARN_EVENT_H_INCLUDED_
#define _NGX_HTTP_ELEARN_EVENT_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <poll.h>


/*
 * Wraps fd in an nginx connection: c->data = data, the two handlers (a
 * NULL handler for an event the caller never arms), the events logging to
 * log, and the read event armed (edge-triggered under epoll: the handler
 * must drain fd).  The write event is left to the caller.  Returns NULL
 * if no connection is free or the read event cannot be armed; fd is never
 * closed here, on success or failure: whoever owns it closes it.
 */
ngx_connection_t *ngx_http_elearn_event_attach(ngx_socket_t fd,
    ngx_log_t *log, ngx_event_handler_pt read_handler,
    ngx_event_handler_pt write_handler, void *data);

/*
 * Gives back a connection from ngx_http_elearn_event_attach() without
 * closing its descriptor, which the library has closed already or is
 * about to close.  Its events are removed and its posted events dropped;
 * events still queued for it in this loop pass are skipped.  c may be
 * NULL: nothing to do.  A caller that owns the descriptor itself uses
 * ngx_close_connection() instead.
 */
void ngx_http_elearn_event_detach(ngx_connection_t *c);

/*
 * Whether fd is ready for events (POLLIN, POLLOUT) now, asked of the
 * kernel with a poll() that never waits: nginx's ready flags are not kept
 * up to date for a socket a library reads and writes.  An error or
 * hang-up counts as ready, so that the library finds it.  A failed poll()
 * is logged as "elearn <who>: poll() failed" and counts as not ready.
 */
ngx_uint_t ngx_http_elearn_event_ready(ngx_socket_t fd, short events,
    const char *who);


#endif /* _NGX_HTTP_ELEARN_EVENT_H_INCLUDED_ */
