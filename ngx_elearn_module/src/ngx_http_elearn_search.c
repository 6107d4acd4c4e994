
/*
 * elearn search: GET /api/v1/courses/search and /courses/suggest.
 *
 * The query string is decoded and validated here ('+' is a space, the
 * result must be UTF-8 without NUL); every value reaches PostgreSQL as a
 * bound parameter of a statement of sql/api.sql, never as SQL text.  A
 * search runs the page statement (one JSON text per course, with its
 * sort key) and, unless the cache has them, the total with the facets in
 * parallel on the pool (counted over at most
 * NGX_HTTP_ELEARN_SEARCH_COUNT_CAP matches, so a common word costs a
 * bounded scan).  Relevance ranks only a bounded,
 * deterministic candidate set (see search_relevance in sql/api.sql).
 *
 * Cursors are keyset positions (sort key, course id) signed with
 * HMAC-SHA256 under elearn_cursor_key_file; the MAC also covers the sort,
 * q and filters, so a modified cursor or one replayed on another query is
 * a 400.  This file must never build SQL from request text.
 *
 * The first NGX_HTTP_ELEARN_SEARCH_CACHE_PAGES offset pages (a cursor walk
 * starts from page 1 too) are cached whole, body and Link header, under
 * search:{catalog version}:{sha256 of the normalized parameters} for
 * elearn_search_cache_ttl.  The total, the facets and the ranked
 * candidate list depend on q and the filters only, so they are computed
 * once per query and kept (as long) in the query entry,
 * search:{catalog version}:query:{sha256 of q and the filters}: every
 * other page, and every page behind a cursor, runs the page statement alone,
 * and a relevance page is a cut of the list, its rows read by id.  A
 * first page or a suggestion is one MGET of the version and the entry
 * under the version the worker saw last (a hit while they agree), or,
 * when the worker holds a copy of that entry (elearn_search_local_cache),
 * one GET of the version alone; the lookup script reads the version and
 * both entries for the other pages and after a first page's miss.
 * Course writes INCR elearn:catalog:version, so after any change every
 * older entry is unreachable at once and just expires (docs/caching.md).
 * Pages behind a cursor are never cached.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "ngx_http_elearn_module.h"
#include "ngx_http_elearn_metrics.h"
#include "ngx_http_elearn_problem.h"
#include "ngx_http_elearn_pg.h"
#include "ngx_http_elearn_redis.h"
#include "ngx_http_elearn_search.h"
#include "ngx_http_elearn_sql.h"


#define NGX_HTTP_ELEARN_SEARCH_Q_MAX        2048     /* bytes */
#define NGX_HTTP_ELEARN_SUGGEST_Q_MAX       100      /* characters */
#define NGX_HTTP_ELEARN_SEARCH_PAGE_SIZE    20
#define NGX_HTTP_ELEARN_SEARCH_PAGE_MAX     100
#define NGX_HTTP_ELEARN_SEARCH_OFFSET_MAX   10000    /* contract 1 */
#define NGX_HTTP_ELEARN_SEARCH_COUNT_CAP    "10000"
#define NGX_HTTP_ELEARN_SEARCH_RANK_CAP     1000
#define NGX_HTTP_ELEARN_CURSOR_MAX          256      /* characters */
#define NGX_HTTP_ELEARN_CURSOR_MAC_LEN      16       /* HMAC-SHA256/128 */
#define NGX_HTTP_ELEARN_SEARCH_ERRORS       8
#define NGX_HTTP_ELEARN_SEARCH_CACHE_PAGES  3
#define NGX_HTTP_ELEARN_SEARCH_VERSION_MAX  20       /* an INCR counter */

#define NGX_HTTP_ELEARN_SORT_RELEVANCE      0
#define NGX_HTTP_ELEARN_SORT_NEWEST         1
#define NGX_HTTP_ELEARN_SORT_POPULAR        2


enum {
    NGX_HTTP_ELEARN_ARG_Q = 0,
    NGX_HTTP_ELEARN_ARG_CATEGORY,
    NGX_HTTP_ELEARN_ARG_LEVEL,
    NGX_HTTP_ELEARN_ARG_LANGUAGE,
    NGX_HTTP_ELEARN_ARG_SORT,
    NGX_HTTP_ELEARN_ARG_PAGE,
    NGX_HTTP_ELEARN_ARG_PAGE_SIZE,
    NGX_HTTP_ELEARN_ARG_CURSOR,
    NGX_HTTP_ELEARN_ARG_N
};


typedef struct ngx_http_elearn_search_local_s
    ngx_http_elearn_search_local_t;


typedef struct {
    ngx_http_request_t            *request;
    ngx_http_elearn_search_arg_t   args[NGX_HTTP_ELEARN_ARG_N];

    ngx_uint_t                     sort;
    ngx_uint_t                     page;
    ngx_uint_t                     page_size;
    ngx_str_t                      key;       /* cursor's sort key */
    ngx_str_t                      id;        /* cursor's course id */

    /* the page */
    ngx_uint_t                     nrows;
    ngx_str_t                     *docs;
    ngx_str_t                      last_key;  /* of row page_size */
    ngx_str_t                      last_id;

    /* the total and the facets */
    ngx_uint_t                     total;
    ngx_str_t                      facets;

    ngx_uint_t                     pending;
    unsigned                       failed:1;

    /* search:{version}:{sha256}, empty when this page is not cached */
    ngx_str_t                      cache_key;
    u_char                         digest[64];

    /* search:{version}:query:{sha256}, empty when it is not kept */
    ngx_str_t                      facets_key;
    u_char                         facets_digest[64];
    /* the page cut from the query entry's ranked list: "id:rank,..." */
    ngx_str_t                      slice;

    unsigned                       have_facets:1;
    unsigned                       have_slice:1;
    unsigned                       cacheable:1;   /* the page is cached */
    unsigned                       page_missed:1; /* looked up, not there */
    unsigned                       suggest:1;     /* search:{version}:s: */

    /* this worker's copy of the entry, held until the request ends */
    ngx_http_elearn_search_local_t  *local;
} ngx_http_elearn_search_t;


/*
 * KEYS[1] elearn:catalog:version; ARGV[1] the page's digest ("" for a
 * page that is not cached), ARGV[2] the digest of q and the filters,
 * ARGV[3] the offset, ARGV[4] how many list entries to cut ("0": none),
 * ARGV[5] and ARGV[6] a cursor's course id and rank ("" for offset
 * paging).
 *
 * The query entry is "<total> <width> <facets length>\n<facets>", then
 * the ranked list, best first, as records of <width> bytes: "id:rank"
 * padded with spaces and ended by ',' (ngx_http_elearn_search_store_query).
 * The script reads the head, a page of records or, for a cursor, the
 * records of a binary search with GETRANGE: never the whole list, whose
 * GET into the script cost Redis more than everything else of a request
 * (redis-benchmark, a 17 KB list: 65 us a call before, 13 us for an
 * offset page and 31 us for a cursor's page now).
 * Returns {version, page entry or nil, "<total>\n<facets>" or nil, the
 * cut "id:rank,..." or nil}: "" past the end, nil when the entry has no
 * list or the cursor's course is not in it (the statement answers then).
 * A page hit returns at once: nothing else is read or copied.
 * The entries' keys are made here from the version, so they are not in
 * KEYS: this needs one Redis, not a cluster (as the whole cache does).
 */
static ngx_http_elearn_redis_script_t  ngx_http_elearn_search_lookup_lua =
    ngx_http_elearn_redis_script("search lookup",
    "local v = redis.call('GET', KEYS[1]) or '0'\n"
    "local page = false\n"
    "if ARGV[1] ~= '' then\n"
    "  page = redis.call('GET', 'search:' .. v .. ':' .. ARGV[1])\n"
    "  if page then return {v, page, false, false} end\n"
    "end\n"
    "local k = 'search:' .. v .. ':query:' .. ARGV[2]\n"
    "local total, w, h = string.match(redis.call('GETRANGE', k, 0, 63),\n"
    "                                 '^(%d+) (%d+) (%d+)\\n')\n"
    "if not total then return {v, page, false, false} end\n"
    "local at = #total + #w + #h + 3\n"
    "w = tonumber(w)\n"
    "h = tonumber(h)\n"
    "local head = total .. '\\n' .. redis.call('GETRANGE', k, at, at + h - 1)\n"
    "if ARGV[4] == '0' or w == 0 then return {v, page, head, false} end\n"
    "at = at + h\n"
    "local n = math.floor((redis.call('STRLEN', k) - at) / w)\n"
    "local first = tonumber(ARGV[3])\n"
    "if ARGV[5] ~= '' then\n"
    "  local id, rank = tonumber(ARGV[5]), tonumber(ARGV[6])\n"
    "  if not id or not rank then return {v, page, head, false} end\n"
    "  local function rec(i)\n"
    "    local e = redis.call('GETRANGE', k, at + i * w, at + i * w + w - 1)\n"
    "    local ri, rr = string.match(e, '^(%d+):([^ ,]+)')\n"
    "    return tonumber(ri), tonumber(rr)\n"
    "  end\n"
    "  local lo, hi = 0, n\n"
    "  while lo < hi do\n"
    "    local mid = math.floor((lo + hi) / 2)\n"
    "    local ri, rr = rec(mid)\n"
    "    if not ri or not rr then return {v, page, head, false} end\n"
    "    if rr > rank or (rr == rank and ri >= id) then\n"
    "      lo = mid + 1\n"
    "    else\n"
    "      hi = mid\n"
    "    end\n"
    "  end\n"
    "  if lo == 0 or rec(lo - 1) ~= id then return {v, page, head, false} end\n"
    "  first = lo\n"
    "end\n"
    "if first >= n then return {v, page, head, ''} end\n"
    "local last = math.min(first + tonumber(ARGV[4]), n)\n"
    "local cut = redis.call('GETRANGE', k, at + first * w, at + last * w - 2)\n"
    "return {v, page, head, (string.gsub(cut, ' ', ''))}\n");


/* the statement of every relevance page cut from a ranked list */
static ngx_http_elearn_pg_stmt_t  ngx_http_elearn_search_by_ids_stmt = {
    NGX_HTTP_ELEARN_PG_STMT_BY_IDS, "elearn_search_by_ids",
    NGX_HTTP_ELEARN_SQL_SEARCH_BY_IDS
};


static ngx_int_t ngx_http_elearn_search_query(ngx_http_request_t *r,
    ngx_http_elearn_search_t *s);
static ngx_int_t ngx_http_elearn_search_by_ids(ngx_http_request_t *r,
    ngx_http_elearn_search_t *s);
static void ngx_http_elearn_suggest_done(ngx_http_request_t *r,
    PGresult *res, ngx_int_t rc, void *data);
static ngx_int_t ngx_http_elearn_search_cache_lookup(ngx_http_request_t *r,
    ngx_http_elearn_search_t *s, ngx_uint_t cached_page);


static const char  *ngx_http_elearn_sort_names[] = {
    "relevance", "newest", "popular"
};

static const char  ngx_http_elearn_sort_chars[] = "rnp";


/* --- configuration ------------------------------------------------------ */

char *
ngx_http_elearn_search_init_conf(ngx_conf_t *cf,
    ngx_http_elearn_main_conf_t *emcf)
{
    u_char           *buf;
    ssize_t           n;
    ngx_fd_t          fd;
    ngx_str_t         path;
    ngx_file_info_t   fi;

    if (emcf->cursor_key_file.len == 0) {
        return NGX_CONF_OK;
    }

    path = emcf->cursor_key_file;

    if (ngx_conf_full_name(cf->cycle, &path, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    fd = ngx_open_file(path.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "\"elearn_cursor_key_file\": cannot open \"%s\"",
                           path.data);
        return NGX_CONF_ERROR;
    }

    buf = NULL;
    n = -1;

    if (ngx_fd_info(fd, &fi) != NGX_FILE_ERROR
        && ngx_file_size(&fi) <= 4096)
    {
        buf = ngx_pnalloc(cf->pool, 4096);
        if (buf) {
            n = read(fd, buf, 4096);
        }
    }

    (void) ngx_close_file(fd);

    if (n < NGX_HTTP_ELEARN_CURSOR_KEY_MIN) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"elearn_cursor_key_file\": \"%s\" must hold "
                           "%d to 4096 bytes", path.data,
                           NGX_HTTP_ELEARN_CURSOR_KEY_MIN);
        return NGX_CONF_ERROR;
    }

    emcf->cursor_key.data = buf;
    emcf->cursor_key.len = n;

    return NGX_CONF_OK;
}


char *
ngx_http_elearn_search_set_local_cache(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    u_char  *p = conf;

    ngx_int_t    n;
    ngx_str_t   *value;
    ngx_uint_t  *entries;

    entries = (ngx_uint_t *) (p + cmd->offset);

    if (*entries != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len == 3 && ngx_strncmp(value[1].data, "off", 3) == 0) {
        *entries = 0;
        return NGX_CONF_OK;
    }

    n = ngx_atoi(value[1].data, value[1].len);

    if (n < 1 || n > NGX_HTTP_ELEARN_SEARCH_LOCAL_LIMIT) {
        return "must be \"off\" or a number of entries from 1 to 65536";
    }

    *entries = n;

    return NGX_CONF_OK;
}


/* --- query string ------------------------------------------------------- */

/* 1: valid UTF-8 (no overlongs, surrogates or NUL); 0: not */
static ngx_uint_t
ngx_http_elearn_search_utf8(u_char *p, size_t len)
{
    u_char    *last;
    uint32_t   c;

    last = p + len;

    while (p < last) {
        if (*p == '\0') {
            return 0;
        }

        if (*p < 0x80) {
            p++;
            continue;
        }

        c = ngx_utf8_decode(&p, last - p);

        if (c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) {
            return 0;
        }
    }

    return 1;
}


static size_t
ngx_http_elearn_search_chars(ngx_str_t *s)
{
    return ngx_utf8_length(s->data, s->len);
}


ngx_int_t
ngx_http_elearn_search_parse_args(ngx_http_request_t *r,
    ngx_http_elearn_search_arg_t *args, ngx_uint_t nargs, const char **bad)
{
    u_char      *p, *last, *name, *eq, *end, *dst, *src;
    size_t       nlen;
    ngx_uint_t   i;

    p = r->args.data;
    last = p + r->args.len;

    while (p < last) {
        name = p;
        end = ngx_strlchr(p, last, '&');
        if (end == NULL) {
            end = last;
        }

        p = end + 1;

        eq = ngx_strlchr(name, end, '=');
        nlen = (eq ? eq : end) - name;

        for (i = 0; i < nargs; i++) {
            if (args[i].name.len == nlen
                && ngx_strncmp(args[i].name.data, name, nlen) == 0)
            {
                break;
            }
        }

        if (i == nargs) {
            continue;
        }

        *bad = (char *) args[i].name.data;

        if (args[i].present) {
            return NGX_DECLINED;
        }

        args[i].present = 1;

        if (eq == NULL) {
            ngx_str_null(&args[i].value);
            continue;
        }

        eq++;

        dst = ngx_pnalloc(r->pool, end - eq + 1);
        if (dst == NULL) {
            return NGX_ERROR;
        }

        /* form encoding: '+' is a space ("%2B" is a plus) */
        for (src = eq; src < end; src++) {
            dst[src - eq] = (*src == '+') ? ' ' : *src;
        }

        args[i].value.data = dst;
        src = dst;
        ngx_unescape_uri(&dst, &src, end - eq, 0);
        args[i].value.len = dst - args[i].value.data;

        if (!ngx_http_elearn_search_utf8(args[i].value.data,
                                         args[i].value.len))
        {
            return NGX_DECLINED;
        }
    }

    return NGX_OK;
}


/* 1: only spaces (or nothing) */
static ngx_uint_t
ngx_http_elearn_search_blank(ngx_str_t *s)
{
    size_t  i;

    for (i = 0; i < s->len; i++) {
        if (s->data[i] != ' ' && s->data[i] != '\t' && s->data[i] != '\n'
            && s->data[i] != '\r' && s->data[i] != '\f'
            && s->data[i] != '\v')
        {
            return 0;
        }
    }

    return 1;
}


ngx_int_t
ngx_http_elearn_search_number(ngx_str_t *s, ngx_uint_t *n)
{
    size_t      i;
    ngx_int_t   v;
    ngx_uint_t  neg;

    neg = (s->len > 1 && s->data[0] == '-');

    if (s->len == 0 || s->len - neg > 9) {
        /* empty; or beyond any limit here, if it is a number */
        for (i = neg; i < s->len; i++) {
            if (s->data[i] < '0' || s->data[i] > '9') {
                return NGX_DECLINED;
            }
        }

        return s->len ? NGX_ABORT : NGX_DECLINED;
    }

    v = ngx_atoi(s->data + neg, s->len - neg);
    if (v == NGX_ERROR) {
        return NGX_DECLINED;
    }

    if (neg || v < 1) {
        return NGX_ABORT;
    }

    *n = v;

    return NGX_OK;
}


static ngx_str_t *
ngx_http_elearn_search_value(ngx_http_elearn_search_t *s, ngx_uint_t i)
{
    return (s->args[i].present && s->args[i].value.len)
           ? &s->args[i].value : NULL;
}


/* --- cursors ------------------------------------------------------------ */

/*
 * MAC of a cursor payload bound to its scope (what the list it was issued
 * for depends on), both length-delimited so no two inputs collide.
 */
static ngx_int_t
ngx_http_elearn_cursor_mac(ngx_http_request_t *r, ngx_str_t *scope,
    ngx_str_t *payload, u_char *mac)
{
    u_char                       *buf, *p;
    unsigned int                  maclen;
    u_char                        full[EVP_MAX_MD_SIZE];
    ngx_http_elearn_main_conf_t  *emcf;

    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

    buf = ngx_pnalloc(r->pool, sizeof("elearn-cursor-v1") + scope->len + 4
                               + payload->len);
    if (buf == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(buf, "elearn-cursor-v1", sizeof("elearn-cursor-v1"));
    p = ngx_cpymem(p, scope->data, scope->len);
    *p++ = (u_char) (payload->len >> 24);
    *p++ = (u_char) (payload->len >> 16);
    *p++ = (u_char) (payload->len >> 8);
    *p++ = (u_char) payload->len;
    p = ngx_cpymem(p, payload->data, payload->len);

    if (HMAC(EVP_sha256(), emcf->cursor_key.data, (int) emcf->cursor_key.len,
             buf, p - buf, full, &maclen)
        == NULL)
    {
        return NGX_ERROR;
    }

    ngx_memcpy(mac, full, NGX_HTTP_ELEARN_CURSOR_MAC_LEN);

    return NGX_OK;
}


ngx_str_t *
ngx_http_elearn_cursor_encode(ngx_http_request_t *r, ngx_str_t *scope,
    ngx_str_t *payload)
{
    u_char     *raw;
    ngx_str_t   signed_payload, *out;

    raw = ngx_pnalloc(r->pool, payload->len + NGX_HTTP_ELEARN_CURSOR_MAC_LEN);
    out = ngx_palloc(r->pool, sizeof(ngx_str_t));
    if (raw == NULL || out == NULL) {
        return NULL;
    }

    ngx_memcpy(raw, payload->data, payload->len);

    if (ngx_http_elearn_cursor_mac(r, scope, payload, raw + payload->len)
        != NGX_OK)
    {
        return NULL;
    }

    signed_payload.data = raw;
    signed_payload.len = payload->len + NGX_HTTP_ELEARN_CURSOR_MAC_LEN;

    out->len = ngx_base64_encoded_length(signed_payload.len);
    out->data = ngx_pnalloc(r->pool, out->len);
    if (out->data == NULL) {
        return NULL;
    }

    ngx_encode_base64url(out, &signed_payload);

    return out;
}


ngx_int_t
ngx_http_elearn_cursor_decode(ngx_http_request_t *r, ngx_str_t *scope,
    ngx_str_t *cursor, ngx_str_t *payload)
{
    ngx_str_t  raw;
    u_char     mac[NGX_HTTP_ELEARN_CURSOR_MAC_LEN];

    if (cursor->len == 0 || cursor->len > NGX_HTTP_ELEARN_CURSOR_MAX) {
        return NGX_DECLINED;
    }

    raw.data = ngx_pnalloc(r->pool, ngx_base64_decoded_length(cursor->len));
    if (raw.data == NULL) {
        return NGX_ERROR;
    }

    if (ngx_decode_base64url(&raw, cursor) != NGX_OK
        || raw.len < NGX_HTTP_ELEARN_CURSOR_MAC_LEN + 3)
    {
        return NGX_DECLINED;
    }

    payload->data = raw.data;
    payload->len = raw.len - NGX_HTTP_ELEARN_CURSOR_MAC_LEN;

    if (ngx_http_elearn_cursor_mac(r, scope, payload, mac) != NGX_OK) {
        return NGX_ERROR;
    }

    if (CRYPTO_memcmp(mac, raw.data + payload->len,
                      NGX_HTTP_ELEARN_CURSOR_MAC_LEN)
        != 0)
    {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/*
 * A search cursor's scope: the sort, q and the filters, each
 * length-prefixed, so a cursor replayed on another query is refused.
 */
static ngx_int_t
ngx_http_elearn_search_scope(ngx_http_request_t *r,
    ngx_http_elearn_search_t *s, ngx_str_t *scope)
{
    u_char      *p;
    size_t       len;
    ngx_str_t   *v;
    ngx_uint_t   i;

    static ngx_uint_t  fields[] = {
        NGX_HTTP_ELEARN_ARG_Q, NGX_HTTP_ELEARN_ARG_CATEGORY,
        NGX_HTTP_ELEARN_ARG_LEVEL, NGX_HTTP_ELEARN_ARG_LANGUAGE
    };

    len = 1;

    for (i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        v = ngx_http_elearn_search_value(s, fields[i]);
        len += 4 + (v ? v->len : 0);
    }

    scope->data = ngx_pnalloc(r->pool, len);
    if (scope->data == NULL) {
        return NGX_ERROR;
    }

    p = scope->data;
    *p++ = (u_char) ngx_http_elearn_sort_chars[s->sort];

    for (i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        v = ngx_http_elearn_search_value(s, fields[i]);
        len = v ? v->len : 0;
        *p++ = (u_char) (len >> 24);
        *p++ = (u_char) (len >> 16);
        *p++ = (u_char) (len >> 8);
        *p++ = (u_char) len;
        if (len) {
            p = ngx_cpymem(p, v->data, len);
        }
    }

    scope->len = p - scope->data;

    return NGX_OK;
}


/* base64url(payload || mac), payload "<key>:<id>"; NULL on no memory */
static ngx_str_t *
ngx_http_elearn_cursor_make(ngx_http_request_t *r,
    ngx_http_elearn_search_t *s)
{
    ngx_str_t  payload, scope;

    payload.len = s->last_key.len + 1 + s->last_id.len;
    payload.data = ngx_pnalloc(r->pool, payload.len);
    if (payload.data == NULL) {
        return NULL;
    }

    ngx_sprintf(payload.data, "%V:%V", &s->last_key, &s->last_id);

    if (ngx_http_elearn_search_scope(r, s, &scope) != NGX_OK) {
        return NULL;
    }

    return ngx_http_elearn_cursor_encode(r, &scope, &payload);
}


/* NGX_OK with s->key and s->id; NGX_DECLINED for any bad cursor */
static ngx_int_t
ngx_http_elearn_cursor_open(ngx_http_request_t *r,
    ngx_http_elearn_search_t *s, ngx_str_t *cursor)
{
    u_char     *p, *colon;
    ngx_int_t   rc;
    ngx_str_t   payload, scope;

    if (ngx_http_elearn_search_scope(r, s, &scope) != NGX_OK) {
        return NGX_ERROR;
    }

    rc = ngx_http_elearn_cursor_decode(r, &scope, cursor, &payload);
    if (rc != NGX_OK) {
        return rc;
    }

    /* ours, so well formed; still checked, it becomes a query parameter */

    colon = NULL;

    for (p = payload.data; p < payload.data + payload.len; p++) {
        if (*p == ':') {
            colon = p;
        } else if (!((*p >= '0' && *p <= '9') || *p == '-' || *p == '.'
                     || *p == 'e' || *p == '+'))
        {
            return NGX_DECLINED;
        }
    }

    if (colon == NULL || colon == payload.data
        || colon == payload.data + payload.len - 1)
    {
        return NGX_DECLINED;
    }

    s->key.len = colon - payload.data;
    s->key.data = ngx_pnalloc(r->pool, s->key.len + 1);
    s->id.len = payload.data + payload.len - colon - 1;
    s->id.data = ngx_pnalloc(r->pool, s->id.len + 1);
    if (s->key.data == NULL || s->id.data == NULL) {
        return NGX_ERROR;
    }

    *ngx_cpymem(s->key.data, payload.data, s->key.len) = '\0';
    *ngx_cpymem(s->id.data, colon + 1, s->id.len) = '\0';

    return NGX_OK;
}


/* --- the answer --------------------------------------------------------- */

/* "/api/v1/courses/search?<params>&page=N" or "...&cursor=C" */
static u_char *
ngx_http_elearn_search_link(ngx_http_request_t *r,
    ngx_http_elearn_search_t *s, u_char *p, ngx_uint_t page,
    ngx_str_t *cursor, const char *rel)
{
    ngx_str_t   *v;
    ngx_uint_t   i;

    static ngx_uint_t  keep[] = {
        NGX_HTTP_ELEARN_ARG_Q, NGX_HTTP_ELEARN_ARG_CATEGORY,
        NGX_HTTP_ELEARN_ARG_LEVEL, NGX_HTTP_ELEARN_ARG_LANGUAGE
    };

    *p++ = '<';
    p = ngx_cpymem(p, r->uri.data, r->uri.len);
    p = ngx_sprintf(p, "?sort=%s&pageSize=%ui",
                    ngx_http_elearn_sort_names[s->sort], s->page_size);

    for (i = 0; i < sizeof(keep) / sizeof(keep[0]); i++) {
        v = ngx_http_elearn_search_value(s, keep[i]);
        if (v == NULL) {
            continue;
        }

        *p++ = '&';
        p = ngx_cpymem(p, s->args[keep[i]].name.data,
                       s->args[keep[i]].name.len);
        *p++ = '=';
        p = (u_char *) ngx_escape_uri(p, v->data, v->len,
                                      NGX_ESCAPE_URI_COMPONENT);
    }

    if (cursor) {
        p = ngx_sprintf(p, "&cursor=%V", cursor);
    } else {
        p = ngx_sprintf(p, "&page=%ui", page);
    }

    return ngx_sprintf(p, ">; rel=\"%s\", ", rel);
}


static ngx_int_t
ngx_http_elearn_search_links(ngx_http_request_t *r,
    ngx_http_elearn_search_t *s, ngx_str_t *next, ngx_uint_t last_page,
    ngx_str_t *link)
{
    u_char      *buf, *p;
    size_t       one, len;
    ngx_str_t   *v;
    ngx_uint_t   i;

    one = r->uri.len + sizeof("<?sort=relevance&pageSize=&page=>; rel=\"\", ")
          + NGX_INT_T_LEN * 2 + sizeof("first") + NGX_HTTP_ELEARN_CURSOR_MAX
          + sizeof("&cursor=");

    for (i = NGX_HTTP_ELEARN_ARG_Q; i <= NGX_HTTP_ELEARN_ARG_LANGUAGE; i++) {
        v = ngx_http_elearn_search_value(s, i);
        if (v) {
            one += 3 * v->len + s->args[i].name.len + 2;
        }
    }

    len = 4 * one;

    buf = ngx_pnalloc(r->pool, len);
    if (buf == NULL) {
        return NGX_ERROR;
    }

    p = buf;

    if (s->args[NGX_HTTP_ELEARN_ARG_CURSOR].present) {
        if (next) {
            p = ngx_http_elearn_search_link(r, s, p, 0, next, "next");
        }

    } else {
        p = ngx_http_elearn_search_link(r, s, p, 1, NULL, "first");

        if (s->page > 1) {
            p = ngx_http_elearn_search_link(r, s, p,
                                            ngx_min(s->page - 1,
                                                    ngx_max(last_page, 1)),
                                            NULL, "prev");
        }

        if (next) {
            /* past result 10,000 the next page is only a cursor away */
            if ((s->page + 1) * s->page_size
                <= NGX_HTTP_ELEARN_SEARCH_OFFSET_MAX)
            {
                p = ngx_http_elearn_search_link(r, s, p, s->page + 1, NULL,
                                                "next");
            } else {
                p = ngx_http_elearn_search_link(r, s, p, 0, next, "next");
            }
        }

        p = ngx_http_elearn_search_link(r, s, p, ngx_max(last_page, 1),
                                        NULL, "last");
    }

    ngx_str_null(link);

    if (p == buf) {
        return NGX_OK;
    }

    link->data = buf;
    link->len = p - buf - 2;              /* the last ", " */

    return ngx_http_elearn_set_link(r, link);
}


/*
 * SET key value EX ttl, fire and forget: a failed store only costs the
 * next reader a query.
 */
static void
ngx_http_elearn_search_set(ngx_http_request_t *r, ngx_str_t *key,
    u_char *value, size_t len)
{
    u_char                       ttl[NGX_TIME_T_LEN];
    const char                   *argv[5];
    size_t                        argvlen[5];
    ngx_http_elearn_main_conf_t  *emcf;

    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

    argv[0] = "SET";
    argvlen[0] = 3;
    argv[1] = (char *) key->data;
    argvlen[1] = key->len;
    argv[2] = (char *) value;
    argvlen[2] = len;
    argv[3] = "EX";
    argvlen[3] = 2;
    argv[4] = (char *) ttl;
    argvlen[4] = ngx_sprintf(ttl, "%T", emcf->search_cache_ttl) - ttl;

    (void) ngx_http_elearn_redis_command(NULL, NULL, NULL, 5, argv, argvlen);
}


/*
 * Stores a page entry: "<n>\n<head><body>", where n is the length of the
 * Link header (head).
 */
static void
ngx_http_elearn_search_cache_store(ngx_http_request_t *r, ngx_str_t *key,
    size_t n, ngx_str_t *head, ngx_str_t *body)
{
    u_char                       *buf, *p;
    ngx_http_elearn_main_conf_t  *emcf;

    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

    if (key->len == 0 || emcf->redis == NULL) {
        return;
    }

    buf = ngx_pnalloc(r->pool, NGX_SIZE_T_LEN + 1 + head->len + body->len);
    if (buf == NULL) {
        return;
    }

    p = ngx_sprintf(buf, "%uz\n%V%V", n, head, body);

    ngx_http_elearn_search_set(r, key, buf, p - buf);
}


/*
 * Stores the query entry: "<total> <width> <facets length>\n<facets>",
 * then the ranked list ("id:rank,..." from search_facets, best first) as
 * records of <width> bytes, each "id:rank" padded with spaces and ended
 * by ',', width the longest plus one (0 with no list).  Fixed records let
 * the lookup script cut a page, or binary-search a cursor, with GETRANGE
 * instead of reading the whole list.
 */
static void
ngx_http_elearn_search_store_query(ngx_http_request_t *r,
    ngx_http_elearn_search_t *s, ngx_str_t *list)
{
    u_char                       *buf, *p, *e, *next, *last;
    size_t                        w, n, pad;
    ngx_http_elearn_main_conf_t  *emcf;

    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

    if (s->facets_key.len == 0 || emcf->redis == NULL) {
        return;
    }

    w = 0;
    n = 0;
    last = list->data + list->len;

    for (e = list->data; e < last; e = next + 1) {
        next = ngx_strlchr(e, last, ',');
        if (next == NULL) {
            next = last;
        }

        w = ngx_max(w, (size_t) (next - e) + 1);
        n++;
    }

    buf = ngx_pnalloc(r->pool, 3 * NGX_SIZE_T_LEN + 3 + s->facets.len
                               + n * w);
    if (buf == NULL) {
        return;
    }

    p = ngx_sprintf(buf, "%ui %uz %uz\n%V", s->total, w, s->facets.len,
                    &s->facets);

    for (e = list->data; e < last; e = next + 1) {
        next = ngx_strlchr(e, last, ',');
        if (next == NULL) {
            next = last;
        }

        p = ngx_cpymem(p, e, next - e);
        pad = w - 1 - (next - e);
        ngx_memset(p, ' ', pad);
        p += pad;
        *p++ = ',';
    }

    ngx_http_elearn_search_set(r, &s->facets_key, buf, p - buf);
}


static ngx_int_t
ngx_http_elearn_search_respond(ngx_http_request_t *r,
    ngx_http_elearn_search_t *s)
{
    u_char      *buf, *p;
    size_t       len;
    ngx_str_t   *next, link, body;
    ngx_uint_t   i, total, last_page, exact;

    next = NULL;

    if (s->nrows > s->page_size) {
        next = ngx_http_elearn_cursor_make(r, s);
        if (next == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        s->nrows = s->page_size;
    }

    /* what offset paging can reach */

    total = s->total;
    exact = (total < NGX_HTTP_ELEARN_SEARCH_OFFSET_MAX);

    if (s->sort == NGX_HTTP_ELEARN_SORT_RELEVANCE
        && s->args[NGX_HTTP_ELEARN_ARG_Q].present
        && total > NGX_HTTP_ELEARN_SEARCH_RANK_CAP)
    {
        total = NGX_HTTP_ELEARN_SEARCH_RANK_CAP;
    }

    last_page = (ngx_min(total, NGX_HTTP_ELEARN_SEARCH_OFFSET_MAX)
                 + s->page_size - 1) / s->page_size;

    len = sizeof("{\"courses\":[],\"facets\":,\"pagination\":{"
                 "\"currentPage\":,\"pageSize\":,\"totalResults\":,"
                 "\"totalResultsExact\":false,\"totalPages\":,"
                 "\"nextCursor\":null}}")
          + 4 * NGX_INT_T_LEN + s->facets.len
          + (next ? next->len + 2 : 0);

    for (i = 0; i < s->nrows; i++) {
        len += s->docs[i].len + 1;
    }

    buf = ngx_pnalloc(r->pool, len);
    if (buf == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(buf, "{\"courses\":[", sizeof("{\"courses\":[") - 1);

    for (i = 0; i < s->nrows; i++) {
        if (i) {
            *p++ = ',';
        }

        p = ngx_cpymem(p, s->docs[i].data, s->docs[i].len);
    }

    p = ngx_sprintf(p, "],\"facets\":%V,\"pagination\":{", &s->facets);

    if (!s->args[NGX_HTTP_ELEARN_ARG_CURSOR].present) {
        p = ngx_sprintf(p, "\"currentPage\":%ui,\"pageSize\":%ui,"
                        "\"totalResults\":%ui,\"totalResultsExact\":%s,"
                        "\"totalPages\":%ui,",
                        s->page, s->page_size, total,
                        exact ? "true" : "false", last_page);
    } else {
        p = ngx_sprintf(p, "\"pageSize\":%ui,", s->page_size);
    }

    if (next) {
        p = ngx_sprintf(p, "\"nextCursor\":\"%V\"}}", next);
    } else {
        p = ngx_cpymem(p, "\"nextCursor\":null}}",
                       sizeof("\"nextCursor\":null}}") - 1);
    }

    if (ngx_http_elearn_search_links(r, s, next, last_page, &link) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    body.data = buf;
    body.len = p - buf;

    ngx_http_elearn_search_cache_store(r, &s->cache_key, link.len, &link,
                                       &body);

    return ngx_http_elearn_send_json(r, NGX_HTTP_OK, (char *) buf, p - buf);
}


static ngx_int_t
ngx_http_elearn_search_copy(ngx_http_request_t *r, ngx_str_t *dst,
    PGresult *res, int row, int col)
{
    dst->len = PQgetlength(res, row, col);
    dst->data = ngx_pnalloc(r->pool, dst->len + 1);
    if (dst->data == NULL) {
        return NGX_ERROR;
    }

    *ngx_cpymem(dst->data, PQgetvalue(res, row, col), dst->len) = '\0';

    return NGX_OK;
}


/* one of the two statements is back; the second one answers */
static void
ngx_http_elearn_search_done(ngx_http_request_t *r,
    ngx_http_elearn_search_t *s, PGresult *res, ngx_int_t rc,
    ngx_uint_t is_page)
{
    int        i, n;
    ngx_int_t  total;
    ngx_str_t  list;

    if (s->failed) {
        return;
    }

    if (rc == NGX_OK && PQresultStatus(res) != PGRES_TUPLES_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "elearn search: %s failed: %s",
                      is_page ? "page" : "facets",
                      PQresultErrorMessage(res));
        rc = NGX_ERROR;
    }

    if (rc == NGX_OK) {
        n = PQntuples(res);

        if (is_page) {
            s->nrows = n;
            s->docs = ngx_palloc(r->pool, (n + 1) * sizeof(ngx_str_t));
            if (s->docs == NULL) {
                rc = NGX_ERROR;
            }

            for (i = 0; rc == NGX_OK && i < n; i++) {
                if (ngx_http_elearn_search_copy(r, &s->docs[i], res, i, 0)
                    != NGX_OK)
                {
                    rc = NGX_ERROR;
                }
            }

            if (rc == NGX_OK && (ngx_uint_t) n > s->page_size
                && (ngx_http_elearn_search_copy(r, &s->last_key, res,
                                                s->page_size - 1, 1)
                    != NGX_OK
                    || ngx_http_elearn_search_copy(r, &s->last_id, res,
                                                   s->page_size - 1, 2)
                       != NGX_OK))
            {
                rc = NGX_ERROR;
            }

        } else if (n != 1) {
            rc = NGX_ERROR;

        } else {
            total = ngx_atoi((u_char *) PQgetvalue(res, 0, 0),
                             PQgetlength(res, 0, 0));
            s->total = (total == NGX_ERROR) ? 0 : total;

            if (ngx_http_elearn_search_copy(r, &s->facets, res, 0, 1)
                != NGX_OK)
            {
                rc = NGX_ERROR;

            } else {
                list.len = PQgetlength(res, 0, 2);
                list.data = (u_char *) PQgetvalue(res, 0, 2);
                ngx_http_elearn_search_store_query(r, s, &list);
            }
        }
    }

    if (rc != NGX_OK) {
        s->failed = 1;
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem_backend(r, rc, "the database"));
        return;
    }

    if (--s->pending) {
        return;
    }

    ngx_http_elearn_finalize(r, ngx_http_elearn_search_respond(r, s));
}


static void
ngx_http_elearn_search_page_done(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc, void *data)
{
    ngx_http_elearn_search_done(r, data, res, rc, 1);
}


static void
ngx_http_elearn_search_facets_done(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc, void *data)
{
    ngx_http_elearn_search_done(r, data, res, rc, 0);
}


/* --- the endpoints ------------------------------------------------------ */

static void
ngx_http_elearn_search_args_init(ngx_http_elearn_search_arg_t *args)
{
    static ngx_str_t  names[] = {
        ngx_string("q"), ngx_string("category"), ngx_string("level"),
        ngx_string("language"), ngx_string("sort"), ngx_string("page"),
        ngx_string("pageSize"), ngx_string("cursor")
    };

    ngx_uint_t  i;

    for (i = 0; i < NGX_HTTP_ELEARN_ARG_N; i++) {
        args[i].name = names[i];
    }
}


/* the value as a NUL-terminated parameter, or NULL for "any" */
static const char *
ngx_http_elearn_search_param(ngx_http_request_t *r,
    ngx_http_elearn_search_t *s, ngx_uint_t i)
{
    u_char     *p;
    ngx_str_t  *v;

    v = ngx_http_elearn_search_value(s, i);
    if (v == NULL) {
        return NULL;
    }

    p = ngx_pnalloc(r->pool, v->len + 1);
    if (p == NULL) {
        return NULL;
    }

    *ngx_cpymem(p, v->data, v->len) = '\0';

    return (char *) p;
}


/*
 * NGX_OK when the parameters are valid; else NGX_DECLINED with the
 * problem sent and *answer holding what sending it returned.
 */
static ngx_int_t
ngx_http_elearn_search_validate(ngx_http_request_t *r,
    ngx_http_elearn_search_t *s, ngx_int_t *answer)
{
    u_char                         *p;
    ngx_str_t                      *v;
    ngx_int_t                       rc;
    ngx_uint_t                      n, i;
    ngx_http_elearn_field_error_t   errors[NGX_HTTP_ELEARN_SEARCH_ERRORS];

    n = 0;

#define ngx_http_elearn_search_error(f, m)                                    \
    if (n < NGX_HTTP_ELEARN_SEARCH_ERRORS) {                                  \
        errors[n].field = f;                                                  \
        errors[n].message = m;                                                \
        n++;                                                                  \
    }

    /* malformed: 400 naming the parameter */

    if (s->args[NGX_HTTP_ELEARN_ARG_PAGE].present) {
        rc = ngx_http_elearn_search_number(
                 &s->args[NGX_HTTP_ELEARN_ARG_PAGE].value, &s->page);
        if (rc == NGX_DECLINED) {
            *answer = ngx_http_elearn_problem(r, NGX_HTTP_BAD_REQUEST,
                                              "bad-query",
                                              "query parameter \"page\" must "
                                              "be a positive integer");
            return NGX_DECLINED;
        }

        if (rc == NGX_ABORT) {
            ngx_http_elearn_search_error("page", "must be at least 1");
        }
    }

    if (s->args[NGX_HTTP_ELEARN_ARG_PAGE_SIZE].present) {
        rc = ngx_http_elearn_search_number(
                 &s->args[NGX_HTTP_ELEARN_ARG_PAGE_SIZE].value,
                 &s->page_size);
        if (rc == NGX_DECLINED) {
            *answer = ngx_http_elearn_problem(r, NGX_HTTP_BAD_REQUEST,
                                              "bad-query",
                                              "query parameter \"pageSize\" "
                                              "must be a positive integer");
            return NGX_DECLINED;
        }

        if (rc == NGX_ABORT || s->page_size > NGX_HTTP_ELEARN_SEARCH_PAGE_MAX)
        {
            ngx_http_elearn_search_error("pageSize",
                                         "must be between 1 and 100");
        }
    }

    if (s->args[NGX_HTTP_ELEARN_ARG_CURSOR].present
        && s->args[NGX_HTTP_ELEARN_ARG_PAGE].present)
    {
        *answer = ngx_http_elearn_problem(r, NGX_HTTP_BAD_REQUEST,
                                          "bad-query",
                                          "query parameters \"page\" and "
                                          "\"cursor\" exclude each other");
        return NGX_DECLINED;
    }

    /* well formed but invalid: 422 with every field at fault */

    if (s->args[NGX_HTTP_ELEARN_ARG_Q].present) {
        v = &s->args[NGX_HTTP_ELEARN_ARG_Q].value;

        if (ngx_http_elearn_search_blank(v)) {
            ngx_http_elearn_search_error("q", "must not be empty; leave "
                                         "it out to browse");

        } else if (v->len > NGX_HTTP_ELEARN_SEARCH_Q_MAX) {
            ngx_http_elearn_search_error("q", "must be at most 2048 bytes");
        }
    }

    v = &s->args[NGX_HTTP_ELEARN_ARG_SORT].value;

    if (!s->args[NGX_HTTP_ELEARN_ARG_SORT].present || v->len == 0) {
        s->sort = s->args[NGX_HTTP_ELEARN_ARG_Q].present
                  ? NGX_HTTP_ELEARN_SORT_RELEVANCE
                  : NGX_HTTP_ELEARN_SORT_NEWEST;

    } else {
        for (i = 0; i < 3; i++) {
            if (ngx_strlen(ngx_http_elearn_sort_names[i]) == v->len
                && ngx_strncmp(ngx_http_elearn_sort_names[i], v->data,
                               v->len) == 0)
            {
                break;
            }
        }

        if (i == 3) {
            ngx_http_elearn_search_error("sort", "must be relevance, "
                                         "newest or popular");
        } else {
            s->sort = i;
        }
    }

    v = ngx_http_elearn_search_value(s, NGX_HTTP_ELEARN_ARG_LEVEL);

    if (v && !((v->len == 8 && ngx_strncmp(v->data, "beginner", 8) == 0)
               || (v->len == 12
                   && ngx_strncmp(v->data, "intermediate", 12) == 0)
               || (v->len == 8 && ngx_strncmp(v->data, "advanced", 8) == 0)))
    {
        ngx_http_elearn_search_error("level", "must be beginner, "
                                     "intermediate or advanced");
    }

    v = ngx_http_elearn_search_value(s, NGX_HTTP_ELEARN_ARG_CATEGORY);

    if (v && ngx_http_elearn_search_chars(v) > 64) {
        ngx_http_elearn_search_error("category",
                                     "must be at most 64 characters");
    }

    v = ngx_http_elearn_search_value(s, NGX_HTTP_ELEARN_ARG_LANGUAGE);

    if (v) {
        for (p = v->data; p < v->data + v->len; p++) {
            if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
                  || (*p >= '0' && *p <= '9') || *p == '-'))
            {
                break;
            }
        }

        if (p != v->data + v->len || v->len < 2 || v->len > 12) {
            ngx_http_elearn_search_error("language",
                                         "must be a language tag such "
                                         "as en or pt-BR");
        }
    }

    if (n == 0 && !s->args[NGX_HTTP_ELEARN_ARG_CURSOR].present
        && s->page * s->page_size > NGX_HTTP_ELEARN_SEARCH_OFFSET_MAX)
    {
        ngx_http_elearn_search_error("page", "offset paging stops at "
                                     "result 10000: continue with the "
                                     "cursor style (cursor=nextCursor)");
    }

#undef ngx_http_elearn_search_error

    if (n) {
        *answer = ngx_http_elearn_problem_fields(r, "invalid search "
                                                 "parameters", errors, n);
        return NGX_DECLINED;
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_elearn_search(ngx_http_request_t *r, ngx_http_elearn_ctx_t *ctx)
{
    ngx_int_t                  rc;
    const char                *bad;
    ngx_http_elearn_search_t  *s;

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    s = ngx_pcalloc(r->pool, sizeof(ngx_http_elearn_search_t));
    if (s == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    s->request = r;
    s->page = 1;
    s->page_size = NGX_HTTP_ELEARN_SEARCH_PAGE_SIZE;
    ctx->data = s;

    ngx_http_elearn_search_args_init(s->args);

    bad = NULL;
    rc = ngx_http_elearn_search_parse_args(r, s->args, NGX_HTTP_ELEARN_ARG_N,
                                           &bad);
    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_DECLINED) {
        return ngx_http_elearn_problem(r, NGX_HTTP_BAD_REQUEST, "bad-query",
                                       "query parameter \"%s\" is repeated "
                                       "or not UTF-8 text", bad);
    }

    if (ngx_http_elearn_search_validate(r, s, &rc) != NGX_OK) {
        return rc;
    }

    if (s->args[NGX_HTTP_ELEARN_ARG_CURSOR].present) {
        rc = ngx_http_elearn_cursor_open(r, s,
                                &s->args[NGX_HTTP_ELEARN_ARG_CURSOR].value);
        if (rc == NGX_ERROR) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (rc == NGX_DECLINED) {
            return ngx_http_elearn_problem(r, NGX_HTTP_BAD_REQUEST,
                                           "bad-cursor",
                                           "query parameter \"cursor\" is "
                                           "not a cursor of this query");
        }
    }

    rc = ngx_http_elearn_search_cache_lookup(r, s,
                          !s->args[NGX_HTTP_ELEARN_ARG_CURSOR].present
                          && s->page <= NGX_HTTP_ELEARN_SEARCH_CACHE_PAGES);

    if (rc != NGX_AGAIN) {
        return rc;
    }

    ngx_http_elearn_wait(r);

    return NGX_DONE;
}


/*
 * A relevance page from the slice of the ranked list: "id:rank,..." into
 * two array literals for search_by_ids.  The list came from our own
 * statement through Redis: anything but digits in an id, or a character
 * a real's text never has in a rank, is a malformed entry.
 */
static ngx_int_t
ngx_http_elearn_search_by_ids(ngx_http_request_t *r,
    ngx_http_elearn_search_t *s)
{
    u_char      *p, *last, *ids, *ranks, *i, *k;
    ngx_int_t    rc;
    ngx_uint_t   in_rank;
    const char  *values[2];

    s->pending = 1;

    if (s->slice.len == 0) {
        s->nrows = 0;
        return ngx_http_elearn_search_respond(r, s);
    }

    ids = ngx_pnalloc(r->pool, 2 * (s->slice.len + 3));
    if (ids == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ranks = ids + s->slice.len + 3;
    i = ids;
    k = ranks;
    *i++ = '{';
    *k++ = '{';
    in_rank = 0;

    for (p = s->slice.data, last = p + s->slice.len; p < last; p++) {

        if (*p == ':' && !in_rank && i[-1] != '{' && i[-1] != ',') {
            in_rank = 1;

        } else if (*p == ',' && in_rank && k[-1] != '{' && k[-1] != ',') {
            in_rank = 0;
            *i++ = ',';
            *k++ = ',';

        } else if (!in_rank && *p >= '0' && *p <= '9') {
            *i++ = *p;

        } else if (in_rank
                   && ((*p >= '0' && *p <= '9') || *p == '.' || *p == 'e'
                       || *p == '-' || *p == '+'))
        {
            *k++ = *p;

        } else {
            goto malformed;
        }
    }

    if (!in_rank || k[-1] == ':' || k[-1] == '{' || k[-1] == ',') {
        goto malformed;
    }

    *i++ = '}';
    *i = '\0';
    *k++ = '}';
    *k = '\0';

    values[0] = (char *) ids;
    values[1] = (char *) ranks;

    rc = ngx_http_elearn_pg_query_prepared(r,
                                           &ngx_http_elearn_search_by_ids_stmt,
                                           2, values,
                                           ngx_http_elearn_search_page_done,
                                           s);
    if (rc != NGX_AGAIN) {
        return ngx_http_elearn_problem_backend(r, rc, "the database");
    }

    return NGX_AGAIN;

malformed:

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  "elearn search: malformed ranked list in \"%V\"",
                  &s->facets_key);

    s->have_slice = 0;

    return ngx_http_elearn_search_query(r, s);
}


/*
 * Starts the page statement, and the facets' too unless they came from
 * the cache.  NGX_AGAIN when they are under way, else
 * the answer (already sent) to finalize with.
 */
static ngx_int_t
ngx_http_elearn_search_query(ngx_http_request_t *r,
    ngx_http_elearn_search_t *s)
{
    u_char                       *p;
    ngx_int_t                     rc;
    const char                   *sql, *values[9];
    const char                  **v;
    ngx_uint_t                    nvalues;
    ngx_http_elearn_main_conf_t  *emcf;
    u_char                        limit[NGX_INT_T_LEN + 1];
    u_char                        offset[NGX_INT_T_LEN + 1];
    u_char                        cap[NGX_INT_T_LEN + 1];

    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

    if (emcf->pg == NULL) {
        return ngx_http_elearn_problem_backend(r,
                                               NGX_HTTP_SERVICE_UNAVAILABLE,
                                               "the database");
    }

    /* one row more than the page tells whether a next page exists */

    p = ngx_sprintf(limit, "%ui", s->page_size + 1);
    *p = '\0';
    p = ngx_sprintf(offset, "%ui", (s->page - 1) * s->page_size);
    *p = '\0';
    p = ngx_sprintf(cap, "%d", NGX_HTTP_ELEARN_SEARCH_RANK_CAP);
    *p = '\0';

    values[0] = ngx_http_elearn_search_param(r, s, NGX_HTTP_ELEARN_ARG_Q);
    values[1] = ngx_http_elearn_search_param(r, s,
                                             NGX_HTTP_ELEARN_ARG_CATEGORY);
    values[2] = ngx_http_elearn_search_param(r, s, NGX_HTTP_ELEARN_ARG_LEVEL);
    values[3] = ngx_http_elearn_search_param(r, s,
                                             NGX_HTTP_ELEARN_ARG_LANGUAGE);
    values[4] = (char *) s->key.data;
    values[5] = (char *) s->id.data;
    values[6] = (char *) limit;
    values[7] = (char *) offset;

    v = values;
    nvalues = 8;

    if (values[0] == NULL) {
        /* browse: the statements have no q */
        v = values + 1;
        nvalues = 7;
        sql = (s->sort == NGX_HTTP_ELEARN_SORT_POPULAR)
              ? NGX_HTTP_ELEARN_SQL_BROWSE_POPULAR
              : NGX_HTTP_ELEARN_SQL_BROWSE_NEWEST;

    } else if (s->sort == NGX_HTTP_ELEARN_SORT_NEWEST) {
        sql = NGX_HTTP_ELEARN_SQL_SEARCH_NEWEST;

    } else if (s->sort == NGX_HTTP_ELEARN_SORT_POPULAR) {
        sql = NGX_HTTP_ELEARN_SQL_SEARCH_POPULAR;

    } else if (s->have_slice) {
        return ngx_http_elearn_search_by_ids(r, s);

    } else {
        sql = NGX_HTTP_ELEARN_SQL_SEARCH_RELEVANCE;
        values[8] = values[7];
        values[7] = values[6];
        values[6] = values[5];
        values[5] = values[4];
        values[4] = (char *) cap;
        nvalues = 9;
    }

    rc = ngx_http_elearn_pg_query(r, sql, nvalues, v,
                                  ngx_http_elearn_search_page_done, s);
    if (rc != NGX_AGAIN) {
        return ngx_http_elearn_problem_backend(r, rc, "the database");
    }

    s->pending = 1;

    if (s->have_facets) {
        return NGX_AGAIN;
    }

    /* with q, the ranked list for the query entry too (whatever the sort) */

    s->pending = 2;
    values[4] = NGX_HTTP_ELEARN_SEARCH_COUNT_CAP;
    values[5] = values[0] ? (char *) cap : "0";

    rc = ngx_http_elearn_pg_query(r, NGX_HTTP_ELEARN_SQL_SEARCH_FACETS, 6,
                                  values, ngx_http_elearn_search_facets_done,
                                  s);
    if (rc != NGX_AGAIN) {
        /* the page query is cancelled with the request */
        s->failed = 1;
        return ngx_http_elearn_problem_backend(r, rc, "the database");
    }

    return NGX_AGAIN;
}


/* the lookup failed or missed: the database answers (and fills) */
static void
ngx_http_elearn_search_miss(ngx_http_request_t *r,
    ngx_http_elearn_search_t *s)
{
    ngx_int_t  rc;

    rc = ngx_http_elearn_search_query(r, s);

    if (rc != NGX_AGAIN) {
        ngx_http_elearn_finalize(r, rc);
    }
}


/*
 * A cached page, "<Link length>\n<Link><body>", split into its Link
 * header and body (pointing into entry).  NGX_OK, or NGX_DECLINED when
 * it is malformed.
 */
static ngx_int_t
ngx_http_elearn_search_parse_page(ngx_http_request_t *r,
    ngx_http_elearn_search_t *s, redisReply *entry, ngx_str_t *link,
    ngx_str_t *body)
{
    u_char  *p, *last;
    size_t   n;

    p = (u_char *) entry->str;
    last = p + entry->len;
    n = 0;

    while (p < last && *p >= '0' && *p <= '9' && n < entry->len) {
        n = n * 10 + (*p++ - '0');
    }

    if (p == last || *p++ != '\n' || n > (size_t) (last - p)) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "elearn search: malformed cache entry \"%V\"",
                      &s->cache_key);
        return NGX_DECLINED;
    }

    link->data = p;
    link->len = n;
    body->data = p + n;
    body->len = last - body->data;

    return NGX_OK;
}


/* a cached page from Redis: sends it (a copy), or NGX_DECLINED */
static ngx_int_t
ngx_http_elearn_search_cached_page(ngx_http_request_t *r,
    ngx_http_elearn_search_t *s, redisReply *entry)
{
    ngx_str_t  link, body, copy;

    if (ngx_http_elearn_search_parse_page(r, s, entry, &link, &body)
        != NGX_OK)
    {
        return NGX_DECLINED;
    }

    /* the reply is hiredis's until we return */

    copy.len = link.len;
    copy.data = ngx_pstrdup(r->pool, &link);

    if ((link.len && copy.data == NULL)
        || ngx_http_elearn_set_link(r, &copy) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_elearn_send_json(r, NGX_HTTP_OK, (char *) body.data,
                                     body.len);
}


/* cached facets, "<total>\n<facets JSON>": NGX_OK, or NGX_DECLINED */
static ngx_int_t
ngx_http_elearn_search_cached_facets(ngx_http_request_t *r,
    ngx_http_elearn_search_t *s, redisReply *entry)
{
    u_char     *p, *last;
    ngx_int_t   total;

    p = (u_char *) entry->str;
    last = p + entry->len;

    while (p < last && *p >= '0' && *p <= '9') {
        p++;
    }

    if (p == (u_char *) entry->str || p == last || *p != '\n'
        || p + 1 == last)
    {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "elearn search: malformed cache entry \"%V\"",
                      &s->facets_key);
        return NGX_DECLINED;
    }

    total = ngx_atoi((u_char *) entry->str, p - (u_char *) entry->str);
    if (total == NGX_ERROR) {
        return NGX_DECLINED;
    }

    s->total = total;

    p++;

    s->facets.len = last - p;
    s->facets.data = ngx_pnalloc(r->pool, s->facets.len);
    if (s->facets.data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(s->facets.data, p, s->facets.len);
    s->have_facets = 1;

    return NGX_OK;
}


static ngx_int_t
ngx_http_elearn_search_key(ngx_http_request_t *r, ngx_str_t *key,
    redisReply *version, const char *infix, u_char *digest)
{
    u_char  *p;

    key->data = ngx_pnalloc(r->pool, sizeof("search:") - 1 + version->len
                                     + ngx_strlen(infix) + 64);
    if (key->data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_sprintf(key->data, "search:%*s%s", (size_t) version->len,
                    version->str, infix);
    p = ngx_cpymem(p, digest, 64);
    key->len = p - key->data;

    return NGX_OK;
}


/* a catalog version as Redis gave it: digits, at most VERSION_MAX */
static ngx_uint_t
ngx_http_elearn_search_version_ok(redisReply *v)
{
    size_t  i;

    if (v->type != REDIS_REPLY_STRING || v->len == 0
        || v->len > NGX_HTTP_ELEARN_SEARCH_VERSION_MAX)
    {
        return 0;
    }

    for (i = 0; i < v->len; i++) {
        if (v->str[i] < '0' || v->str[i] > '9') {
            return 0;
        }
    }

    return 1;
}


/* the catalog version of a lookup script's reply, or NULL */
static redisReply *
ngx_http_elearn_search_version(redisReply *reply, ngx_int_t rc)
{
    if (rc != NGX_OK || reply->type != REDIS_REPLY_ARRAY
        || reply->elements != 4
        || !ngx_http_elearn_search_version_ok(reply->element[0]))
    {
        return NULL;
    }

    return reply->element[0];
}


static void
ngx_http_elearn_search_lookup_done(ngx_http_request_t *r,
    redisReply *reply, ngx_int_t rc, void *data)
{
    ngx_http_elearn_search_t *s = data;

    ngx_uint_t   cached_page;
    redisReply  *v, *page, *facets, *slice;

    cached_page = s->cacheable;

    v = ngx_http_elearn_search_version(reply, rc);
    if (v == NULL) {
        /* no version, no safe key: the database answers, nothing kept */
        goto miss;
    }

    page = reply->element[1];
    facets = reply->element[2];
    slice = reply->element[3];

    if (ngx_http_elearn_search_key(r, &s->facets_key, v, ":query:",
                                   s->facets_digest)
        != NGX_OK)
    {
        ngx_http_elearn_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    if (cached_page) {
        if (ngx_http_elearn_search_key(r, &s->cache_key, v, ":", s->digest)
            != NGX_OK)
        {
            ngx_http_elearn_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }

        if (!s->page_missed && page->type == REDIS_REPLY_STRING) {
            rc = ngx_http_elearn_search_cached_page(r, s, page);

            if (rc != NGX_DECLINED) {
                ngx_http_elearn_metrics_cache(r, NGX_HTTP_ELEARN_CACHE_SEARCH,
                                              1);
                ngx_http_elearn_finalize(r, rc);
                return;
            }
        }

        if (!s->page_missed) {
            ngx_http_elearn_metrics_cache(r, NGX_HTTP_ELEARN_CACHE_SEARCH, 0);
        }
    }

    if (facets->type == REDIS_REPLY_STRING) {
        rc = ngx_http_elearn_search_cached_facets(r, s, facets);
        if (rc == NGX_ERROR) {
            ngx_http_elearn_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }
    }

    if (s->have_facets && slice->type == REDIS_REPLY_STRING) {
        s->slice.len = slice->len;
        s->slice.data = ngx_pnalloc(r->pool, slice->len + 1);
        if (s->slice.data == NULL) {
            ngx_http_elearn_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }

        ngx_memcpy(s->slice.data, slice->str, slice->len);
        s->have_slice = 1;
    }

    ngx_http_elearn_metrics_cache(r, NGX_HTTP_ELEARN_CACHE_FACETS,
                                  s->have_facets);

    ngx_http_elearn_search_miss(r, s);
    return;

miss:

    if (cached_page && !s->page_missed) {
        ngx_http_elearn_metrics_cache(r, NGX_HTTP_ELEARN_CACHE_SEARCH, 0);
    }

    ngx_http_elearn_metrics_cache(r, NGX_HTTP_ELEARN_CACHE_FACETS, 0);
    s->facets_key.len = 0;
    ngx_http_elearn_search_miss(r, s);
}


/*
 * Hex SHA-256 (64 characters) of a cache key's text.  The digest is
 * fetched once per worker and the context kept: with EVP_sha256() every
 * call fetched it again (OpenSSL 3), which cost more than the hashing.
 */
static ngx_int_t
ngx_http_elearn_search_sha256(u_char *buf, size_t len, u_char *hex)
{
    u_char        md[EVP_MAX_MD_SIZE];
    unsigned int  mdlen;

    static EVP_MD_CTX  *ctx;
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    static EVP_MD      *sha256;

    if (sha256 == NULL) {
        sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
        if (sha256 == NULL) {
            return NGX_ERROR;
        }
    }
#else
    const EVP_MD       *sha256 = EVP_sha256();
#endif

    if (ctx == NULL) {
        ctx = EVP_MD_CTX_new();
        if (ctx == NULL) {
            return NGX_ERROR;
        }
    }

    if (EVP_DigestInit_ex(ctx, sha256, NULL) != 1
        || EVP_DigestUpdate(ctx, buf, len) != 1
        || EVP_DigestFinal_ex(ctx, md, &mdlen) != 1
        || mdlen != 32)
    {
        return NGX_ERROR;
    }

    ngx_hex_dump(hex, md, mdlen);

    return NGX_OK;
}


/*
 * Hex SHA-256 of the parameters that make the answer, by name in byte
 * order, each length-prefixed, with defaults resolved (so "sort" left out
 * and the default sort spelled out share an entry).  Without page_too,
 * of q and the filters alone: what the total and the facets depend on.
 */
static ngx_int_t
ngx_http_elearn_search_digest(ngx_http_request_t *r,
    ngx_http_elearn_search_t *s, ngx_uint_t page_too, u_char *digest)
{
    u_char        *buf, *p;
    size_t         len;
    ngx_str_t     *v, none = ngx_null_string;
    ngx_uint_t     i, k;

    static ngx_uint_t  sorted[] = {
        NGX_HTTP_ELEARN_ARG_CATEGORY, NGX_HTTP_ELEARN_ARG_LANGUAGE,
        NGX_HTTP_ELEARN_ARG_LEVEL, NGX_HTTP_ELEARN_ARG_Q
    };

    len = sizeof("page=;pageSize=;sort=;") + 2 * NGX_INT_T_LEN
          + sizeof("relevance");

    for (i = 0; i < sizeof(sorted) / sizeof(sorted[0]); i++) {
        len += s->args[sorted[i]].name.len + NGX_SIZE_T_LEN + 3
               + s->args[sorted[i]].value.len;
    }

    buf = ngx_pnalloc(r->pool, len);
    if (buf == NULL) {
        return NGX_ERROR;
    }

    p = buf;

    /* category, language, level, page, pageSize, q, sort */

    for (k = 0; k < 4; k++) {
        i = sorted[k];
        v = ngx_http_elearn_search_value(s, i);

        if (v == NULL) {
            v = &none;
        }

        if (page_too && i == NGX_HTTP_ELEARN_ARG_Q) {
            p = ngx_sprintf(p, "page=%ui;pageSize=%ui;", s->page,
                            s->page_size);
        }

        p = ngx_sprintf(p, "%V=%uz:%V;", &s->args[i].name, v->len, v);
    }

    if (page_too) {
        p = ngx_sprintf(p, "sort=%s;", ngx_http_elearn_sort_names[s->sort]);
    }

    return ngx_http_elearn_search_sha256(buf, p - buf, digest);
}


/*
 * One script: the catalog version, the page's entry (when the page is one
 * that is cached and was not looked up already), the query entry and the
 * cut of its ranked list.  NGX_AGAIN or the answer.
 */
static ngx_int_t
ngx_http_elearn_search_eval(ngx_http_request_t *r,
    ngx_http_elearn_search_t *s)
{
    u_char      *p;
    ngx_int_t    rc;
    ngx_uint_t   cut;
    const char  *argv[7];
    size_t       argvlen[7];

    p = ngx_pnalloc(r->pool, 2 * NGX_INT_T_LEN);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* made here, not before: a first page's hit never needs it */

    if (s->facets_digest[0] == '\0'
        && ngx_http_elearn_search_digest(r, s, 0, s->facets_digest)
           != NGX_OK)
    {
        s->cache_key.len = 0;
        return ngx_http_elearn_search_query(r, s);
    }

    argv[0] = "elearn:catalog:version";
    argvlen[0] = sizeof("elearn:catalog:version") - 1;
    argv[1] = (char *) s->digest;
    argvlen[1] = (s->cacheable && !s->page_missed) ? sizeof(s->digest) : 0;
    argv[2] = (char *) s->facets_digest;
    argvlen[2] = sizeof(s->facets_digest);

    /* a relevance page is cut from the ranked list: one row more, too */

    cut = (s->sort == NGX_HTTP_ELEARN_SORT_RELEVANCE
           && s->args[NGX_HTTP_ELEARN_ARG_Q].present)
          ? s->page_size + 1 : 0;

    argv[3] = (char *) p;
    argvlen[3] = ngx_sprintf(p, "%ui", (s->page - 1) * s->page_size) - p;
    p += argvlen[3];
    argv[4] = (char *) p;
    argvlen[4] = ngx_sprintf(p, "%ui", cut) - p;
    argv[5] = s->id.len ? (char *) s->id.data : "";
    argvlen[5] = s->id.len;
    argv[6] = s->id.len ? (char *) s->key.data : "";
    argvlen[6] = s->id.len ? s->key.len : 0;

    rc = ngx_http_elearn_redis_eval(r, &ngx_http_elearn_search_lookup_lua,
                                    ngx_http_elearn_search_lookup_done, s, 1,
                                    7, argv, argvlen);
    if (rc != NGX_AGAIN) {
        if (s->cacheable && !s->page_missed) {
            ngx_http_elearn_metrics_cache(r, NGX_HTTP_ELEARN_CACHE_SEARCH, 0);
        }

        ngx_http_elearn_metrics_cache(r, NGX_HTTP_ELEARN_CACHE_FACETS, 0);
        return ngx_http_elearn_search_query(r, s);
    }

    return NGX_AGAIN;
}


/* the eval path from a Redis callback */
static void
ngx_http_elearn_search_eval_or_query(ngx_http_request_t *r,
    ngx_http_elearn_search_t *s)
{
    ngx_int_t  rc;

    rc = ngx_http_elearn_search_eval(r, s);

    if (rc != NGX_AGAIN) {
        ngx_http_elearn_finalize(r, rc);
    }
}


/*
 * The catalog version this worker read last (len 0 before its first
 * lookup).  Each worker process keeps its own: a first page or a
 * suggestion is read with the version itself in one MGET under the key
 * this version makes, and is a hit only when Redis still holds that very
 * version (docs/caching.md, "One round trip for a hit").
 */
static u_char  ngx_http_elearn_search_seen[NGX_HTTP_ELEARN_SEARCH_VERSION_MAX];
static size_t  ngx_http_elearn_search_seen_len;


static ngx_int_t ngx_http_elearn_suggest_query(ngx_http_request_t *r,
    ngx_http_elearn_search_t *s);


/* a command on one key ("GET", "PTTL"): ngx_http_elearn_redis_command() */
static ngx_int_t
ngx_http_elearn_search_key_command(ngx_http_request_t *r, const char *cmd,
    ngx_str_t *key, ngx_http_elearn_redis_handler_pt handler, void *data)
{
    const char  *argv[2];
    size_t       argvlen[2];

    argv[0] = cmd;
    argvlen[0] = ngx_strlen(cmd);
    argv[1] = (char *) key->data;
    argvlen[1] = key->len;

    return ngx_http_elearn_redis_command(r, handler, data, 2, argv, argvlen);
}


/* --- this worker's copy of the hottest first pages ---------------------- */

/*
 * elearn_search_local_cache: a first page or a suggestion that Redis
 * answered is copied into this worker's memory, keyed by its full key
 * (so by the catalog version), with the expiry its Redis key has (read
 * with PTTL right after).  A later lookup that finds the copy under the
 * version the worker saw last asks Redis for the version alone (a GET)
 * and, when it is still that one, sends the copy: no entry travels from
 * Redis, nothing is copied (the response's buffer points into the copy,
 * which a reference keeps alive until the request is done).  The version
 * is read on every request, so a course write shows in the very next
 * search on any worker, as without the copy.  At most
 * elearn_search_local_cache entries of NGX_HTTP_ELEARN_SEARCH_LOCAL_MAX
 * bytes, least recently used dropped first; all of them are dropped when
 * the worker sees a new version, and freed when it exits.
 */
struct ngx_http_elearn_search_local_s {
    ngx_http_elearn_search_local_t  *next;     /* in its bucket */
    ngx_queue_t                      queue;    /* LRU, or the pending */
    ngx_msec_t                       expires;  /* pending: when asked */
    ngx_uint_t                       refs;     /* the table + requests */
    ngx_uint_t                       hash;
    ngx_str_t                        key;      /* search:{version}:... */
    ngx_str_t                        link;
    ngx_str_t                        body;
};


typedef struct {
    ngx_http_elearn_search_local_t  **buckets;
    ngx_uint_t                        mask;     /* buckets - 1 */
    ngx_uint_t                        max;      /* entries */
    ngx_uint_t                        n;
    ngx_uint_t                        npending;
    ngx_uint_t                        fills;    /* made in second now */
    time_t                            now;
    ngx_queue_t                       lru;      /* most recent first */
    ngx_queue_t                       pending;  /* awaiting their PTTL */
} ngx_http_elearn_search_locals_t;


/* fills whose PTTL is in flight at once, at most */
#define NGX_HTTP_ELEARN_SEARCH_LOCAL_PENDING  16


static ngx_http_elearn_search_locals_t  ngx_http_elearn_search_locals;


static void
ngx_http_elearn_search_local_release(ngx_http_elearn_search_local_t *e)
{
    if (--e->refs == 0) {
        ngx_free(e);
    }
}


/* a request's reference, dropped when its pool goes */
static void
ngx_http_elearn_search_local_unref(void *data)
{
    ngx_http_elearn_search_local_release(data);
}


static void
ngx_http_elearn_search_local_unlink(ngx_http_elearn_search_local_t *e)
{
    ngx_http_elearn_search_local_t  **pp;
    ngx_http_elearn_search_locals_t  *t = &ngx_http_elearn_search_locals;

    for (pp = &t->buckets[e->hash & t->mask]; *pp != e; pp = &(*pp)->next)
    {
        /* void */
    }

    *pp = e->next;
    ngx_queue_remove(&e->queue);
    t->n--;

    ngx_http_elearn_search_local_release(e);
}


/* every entry (a new catalog version makes them all unreachable) */
static void
ngx_http_elearn_search_local_flush(void)
{
    ngx_http_elearn_search_locals_t  *t = &ngx_http_elearn_search_locals;

    if (t->buckets == NULL) {
        return;
    }

    while (!ngx_queue_empty(&t->lru)) {
        ngx_http_elearn_search_local_unlink(
            ngx_queue_data(ngx_queue_head(&t->lru),
                           ngx_http_elearn_search_local_t, queue));
    }
}


/* the worker exits: everything is freed */
static void
ngx_http_elearn_search_local_cleanup(void *data)
{
    ngx_queue_t                      *q;
    ngx_http_elearn_search_locals_t  *t = &ngx_http_elearn_search_locals;

    ngx_http_elearn_search_local_flush();

    while (!ngx_queue_empty(&t->pending)) {
        q = ngx_queue_head(&t->pending);
        ngx_queue_remove(q);
        ngx_http_elearn_search_local_release(
            ngx_queue_data(q, ngx_http_elearn_search_local_t, queue));
    }

    ngx_free(t->buckets);
    t->buckets = NULL;
}


/* the table on first use: NGX_OK, or NGX_DECLINED (off, or no memory) */
static ngx_int_t
ngx_http_elearn_search_local_ready(ngx_http_request_t *r)
{
    ngx_uint_t                        n;
    ngx_pool_cleanup_t               *cln;
    ngx_http_elearn_main_conf_t      *emcf;
    ngx_http_elearn_search_locals_t  *t = &ngx_http_elearn_search_locals;

    if (t->buckets) {
        return NGX_OK;
    }

    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

    if (emcf->search_local_cache == 0) {
        return NGX_DECLINED;
    }

    for (n = 16; n < 2 * emcf->search_local_cache; n *= 2) {
        /* void */
    }

    cln = ngx_pool_cleanup_add(ngx_cycle->pool, 0);
    if (cln == NULL) {
        return NGX_DECLINED;
    }

    t->buckets = ngx_calloc(n * sizeof(ngx_http_elearn_search_local_t *),
                            ngx_cycle->log);
    if (t->buckets == NULL) {
        return NGX_DECLINED;
    }

    cln->handler = ngx_http_elearn_search_local_cleanup;
    cln->data = NULL;

    t->mask = n - 1;
    t->max = emcf->search_local_cache;
    ngx_queue_init(&t->lru);
    ngx_queue_init(&t->pending);

    return NGX_OK;
}


/* the entry of key, unexpired, made the most recent; or NULL */
static ngx_http_elearn_search_local_t *
ngx_http_elearn_search_local_find(ngx_str_t *key, ngx_uint_t hash)
{
    ngx_http_elearn_search_local_t   *e;
    ngx_http_elearn_search_locals_t  *t = &ngx_http_elearn_search_locals;

    for (e = t->buckets[hash & t->mask]; e; e = e->next) {
        if (e->hash == hash && e->key.len == key->len
            && ngx_memcmp(e->key.data, key->data, key->len) == 0)
        {
            break;
        }
    }

    if (e == NULL) {
        return NULL;
    }

    if ((ngx_msec_int_t) (e->expires - ngx_current_msec) <= 0) {
        /* its Redis key has expired by now: never served past that */
        ngx_http_elearn_search_local_unlink(e);
        return NULL;
    }

    ngx_queue_remove(&e->queue);
    ngx_queue_insert_head(&t->lru, &e->queue);

    return e;
}


/* PTTL of a fill's key: lists it until the key expires in Redis */
static void
ngx_http_elearn_search_local_pttl(ngx_http_request_t *r, redisReply *reply,
    ngx_int_t rc, void *data)
{
    ngx_http_elearn_search_local_t *e = data;

    size_t                            len;
    ngx_http_elearn_search_local_t   *old;
    ngx_http_elearn_search_locals_t  *t = &ngx_http_elearn_search_locals;

    ngx_queue_remove(&e->queue);
    t->npending--;

    len = ngx_http_elearn_search_seen_len;

    /* only under the version current now, and only a key that expires */

    if (rc != NGX_OK || reply->type != REDIS_REPLY_INTEGER
        || reply->integer <= 0
        || e->key.len < sizeof("search:") + len
        || ngx_memcmp(e->key.data + sizeof("search:") - 1,
                      ngx_http_elearn_search_seen, len) != 0
        || e->key.data[sizeof("search:") - 1 + len] != ':')
    {
        ngx_http_elearn_search_local_release(e);
        return;
    }

    /* from when the PTTL was sent: never later than Redis's expiry */
    e->expires += (ngx_msec_t) ngx_min(reply->integer, NGX_MAX_INT32_VALUE);

    old = ngx_http_elearn_search_local_find(&e->key, e->hash);
    if (old) {
        ngx_http_elearn_search_local_unlink(old);
    }

    if (t->n >= t->max) {
        ngx_http_elearn_search_local_unlink(
            ngx_queue_data(ngx_queue_last(&t->lru),
                           ngx_http_elearn_search_local_t, queue));
    }

    e->next = t->buckets[e->hash & t->mask];
    t->buckets[e->hash & t->mask] = e;
    ngx_queue_insert_head(&t->lru, &e->queue);
    t->n++;
}


/*
 * A page (link, body) that Redis just gave for s->cache_key, under the
 * current version: copied into a new entry, which is listed once the
 * PTTL of its key comes back.  Best effort: a fill that cannot be made
 * only means the next lookup reads Redis again.
 */
static void
ngx_http_elearn_search_local_fill(ngx_http_request_t *r,
    ngx_http_elearn_search_t *s, ngx_str_t *link, ngx_str_t *body)
{
    u_char                           *p;
    ngx_uint_t                        hash;
    ngx_queue_t                      *q;
    ngx_http_elearn_search_local_t   *e;
    ngx_http_elearn_search_locals_t  *t = &ngx_http_elearn_search_locals;

    if (link->len + body->len > NGX_HTTP_ELEARN_SEARCH_LOCAL_MAX
        || ngx_http_elearn_search_local_ready(r) != NGX_OK
        || t->npending >= NGX_HTTP_ELEARN_SEARCH_LOCAL_PENDING)
    {
        return;
    }

    /*
     * At most as many copies a second as the table holds: when more
     * entries are hot than it holds, copying each on every hit would
     * cost more (a copy, a PTTL, an eviction) than the copies save.
     */

    if (t->now != ngx_time()) {
        t->now = ngx_time();
        t->fills = 0;
    }

    if (t->fills >= t->max) {
        return;
    }

    hash = ngx_hash_key(s->cache_key.data, s->cache_key.len);

    /* one fill of a key at a time */

    for (q = ngx_queue_head(&t->pending);
         q != ngx_queue_sentinel(&t->pending);
         q = ngx_queue_next(q))
    {
        e = ngx_queue_data(q, ngx_http_elearn_search_local_t, queue);

        if (e->hash == hash && e->key.len == s->cache_key.len
            && ngx_memcmp(e->key.data, s->cache_key.data, e->key.len) == 0)
        {
            return;
        }
    }

    e = ngx_alloc(sizeof(ngx_http_elearn_search_local_t) + s->cache_key.len
                  + link->len + body->len, ngx_cycle->log);
    if (e == NULL) {
        return;
    }

    p = (u_char *) (e + 1);

    e->next = NULL;
    e->refs = 1;
    e->hash = hash;
    e->expires = ngx_current_msec;

    e->key.data = p;
    e->key.len = s->cache_key.len;
    p = ngx_cpymem(p, s->cache_key.data, s->cache_key.len);
    e->link.data = p;
    e->link.len = link->len;
    p = ngx_cpymem(p, link->data, link->len);
    e->body.data = p;
    e->body.len = body->len;
    ngx_memcpy(p, body->data, body->len);

    if (ngx_http_elearn_search_key_command(NULL, "PTTL", &e->key,
                                           ngx_http_elearn_search_local_pttl,
                                           e)
        != NGX_AGAIN)
    {
        ngx_free(e);
        return;
    }

    ngx_queue_insert_tail(&t->pending, &e->queue);
    t->npending++;
    t->fills++;
}


/*
 * The copy of s->cache_key, referenced by r until it ends, or NULL (none
 * kept, or the cache is off).
 */
static ngx_http_elearn_search_local_t *
ngx_http_elearn_search_local_get(ngx_http_request_t *r,
    ngx_http_elearn_search_t *s)
{
    ngx_pool_cleanup_t              *cln;
    ngx_http_elearn_search_local_t  *e;

    if (ngx_http_elearn_search_locals.n == 0) {
        return NULL;
    }

    e = ngx_http_elearn_search_local_find(&s->cache_key,
                                          ngx_hash_key(s->cache_key.data,
                                                       s->cache_key.len));
    if (e == NULL) {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    e->refs++;
    cln->handler = ngx_http_elearn_search_local_unref;
    cln->data = e;

    return e;
}


/* sends the copy: the body buffer points into it */
static ngx_int_t
ngx_http_elearn_search_local_send(ngx_http_request_t *r,
    ngx_http_elearn_search_local_t *e)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    if (ngx_http_elearn_set_link(r, &e->link) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = e->body.len;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->pos = e->body.data;
    b->last = e->body.data + e->body.len;
    b->memory = 1;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


/*
 * The entry of a first page or a suggestion, read under the catalog
 * version current at that moment (s->cache_key is its key), or NULL when
 * no version could be read: then nothing is kept, and a page goes to
 * the script (which reads the version once more) or to the database.
 */
static void
ngx_http_elearn_search_entry(ngx_http_request_t *r,
    ngx_http_elearn_search_t *s, redisReply *entry)
{
    ngx_int_t   rc;
    ngx_str_t   link, body;
    ngx_uint_t  cache;

    cache = s->suggest ? NGX_HTTP_ELEARN_CACHE_SUGGEST
                       : NGX_HTTP_ELEARN_CACHE_SEARCH;

    if (entry == NULL) {
        s->cache_key.len = 0;

        if (!s->suggest) {
            ngx_http_elearn_search_eval_or_query(r, s);
            return;
        }

    } else if (entry->type == REDIS_REPLY_STRING) {
        rc = ngx_http_elearn_search_parse_page(r, s, entry, &link, &body);

        if (rc == NGX_OK) {
            ngx_http_elearn_search_local_fill(r, s, &link, &body);
            rc = ngx_http_elearn_search_cached_page(r, s, entry);
        }

        if (rc != NGX_DECLINED) {
            ngx_http_elearn_metrics_cache(r, cache, 1);
            ngx_http_elearn_finalize(r, rc);
            return;
        }
    }

    ngx_http_elearn_metrics_cache(r, cache, 0);

    if (s->suggest) {
        rc = ngx_http_elearn_suggest_query(r, s);
        if (rc != NGX_AGAIN) {
            ngx_http_elearn_finalize(r, rc);
        }

        return;
    }

    s->page_missed = 1;

    ngx_http_elearn_search_eval_or_query(r, s);
}


static void
ngx_http_elearn_search_entry_get(ngx_http_request_t *r, redisReply *reply,
    ngx_int_t rc, void *data)
{
    ngx_http_elearn_search_t *s = data;

    ngx_http_elearn_search_entry(r, s, (rc == NGX_OK) ? reply : NULL);
}


/*
 * The version v (a GET's reply, or the first of an MGET's) is the current
 * one: remembers it for this worker's next lookups and reads the entry
 * under it (one GET more).
 */
static void
ngx_http_elearn_search_entry_at(ngx_http_request_t *r,
    ngx_http_elearn_search_t *s, redisReply *v)
{
    redisReply  zero;

    if (v->type == REDIS_REPLY_NIL) {
        ngx_memzero(&zero, sizeof(redisReply));
        zero.type = REDIS_REPLY_STRING;
        zero.str = "0";                  /* no course written yet */
        zero.len = 1;
        v = &zero;
    }

    if (!ngx_http_elearn_search_version_ok(v)) {
        ngx_http_elearn_search_entry(r, s, NULL);
        return;
    }

    if (v->len != ngx_http_elearn_search_seen_len
        || ngx_memcmp(ngx_http_elearn_search_seen, v->str, v->len) != 0)
    {
        /* every copy is of an older version now */
        ngx_http_elearn_search_local_flush();
    }

    ngx_memcpy(ngx_http_elearn_search_seen, v->str, v->len);
    ngx_http_elearn_search_seen_len = v->len;

    if (ngx_http_elearn_search_key(r, &s->cache_key, v,
                                   s->suggest ? ":s:" : ":", s->digest)
        != NGX_OK)
    {
        ngx_http_elearn_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    if (ngx_http_elearn_search_key_command(r, "GET", &s->cache_key,
                                           ngx_http_elearn_search_entry_get,
                                           s)
        != NGX_AGAIN)
    {
        ngx_http_elearn_search_entry(r, s, NULL);
    }
}


/*
 * 1 when v (a GET's reply, or the first of an MGET's) is the version in
 * s->cache_key, "search:{version}:...", which a lookup made from the
 * version this worker saw last; no version at all is "0".
 */
static ngx_uint_t
ngx_http_elearn_search_version_is(ngx_http_elearn_search_t *s,
    redisReply *v)
{
    size_t   len;
    u_char  *p;

    p = s->cache_key.data + sizeof("search:") - 1;
    len = s->cache_key.len - (sizeof("search:") - 1) - sizeof(s->digest)
          - (s->suggest ? sizeof(":s:") - 1 : sizeof(":") - 1);

    if (v->type == REDIS_REPLY_STRING) {
        return v->len == len && ngx_strncmp(v->str, p, len) == 0;
    }

    return v->type == REDIS_REPLY_NIL && len == 1 && *p == '0';
}


/* {version, entry under the version this worker remembered} */
static void
ngx_http_elearn_search_mget_done(ngx_http_request_t *r, redisReply *reply,
    ngx_int_t rc, void *data)
{
    ngx_http_elearn_search_t *s = data;

    if (rc != NGX_OK || reply->type != REDIS_REPLY_ARRAY
        || reply->elements != 2)
    {
        ngx_http_elearn_search_entry(r, s, NULL);
        return;
    }

    if (ngx_http_elearn_search_version_is(s, reply->element[0])) {
        ngx_http_elearn_search_entry(r, s, reply->element[1]);
        return;
    }

    /* the catalog changed since this worker last looked */

    ngx_http_elearn_search_entry_at(r, s, reply->element[0]);
}


/*
 * The version alone: on a worker's first lookup, or for a lookup that
 * found this worker's copy (s->local) under the version it saw last,
 * which is the answer while Redis still holds that version.
 */
static void
ngx_http_elearn_search_version_got(ngx_http_request_t *r, redisReply *reply,
    ngx_int_t rc, void *data)
{
    ngx_http_elearn_search_t *s = data;

    if (rc != NGX_OK) {
        ngx_http_elearn_search_entry(r, s, NULL);
        return;
    }

    if (s->local && ngx_http_elearn_search_version_is(s, reply)) {
        ngx_http_elearn_metrics_cache(r, s->suggest
                                         ? NGX_HTTP_ELEARN_CACHE_SUGGEST
                                         : NGX_HTTP_ELEARN_CACHE_SEARCH, 1);
        ngx_http_elearn_finalize(r,
                          ngx_http_elearn_search_local_send(r, s->local));
        return;
    }

    ngx_http_elearn_search_entry_at(r, s, reply);
}


/*
 * A first page or a suggestion, s->digest made: one MGET of the catalog
 * version and of the entry under the version this worker saw last, a
 * hit when the two agree; when the worker holds a copy of that entry,
 * a GET of the version alone.  Right after a change (and on a worker's
 * first lookup) one GET more, under the version just read.  NGX_AGAIN,
 * or NGX_DECLINED when Redis is not connected.
 */
static ngx_int_t
ngx_http_elearn_search_entry_lookup(ngx_http_request_t *r,
    ngx_http_elearn_search_t *s)
{
    ngx_int_t    rc;
    const char  *argv[3];
    size_t       argvlen[3];
    redisReply   seen;

    argv[0] = "MGET";
    argvlen[0] = 4;
    argv[1] = "elearn:catalog:version";
    argvlen[1] = sizeof("elearn:catalog:version") - 1;

    if (ngx_http_elearn_search_seen_len) {
        ngx_memzero(&seen, sizeof(redisReply));
        seen.str = (char *) ngx_http_elearn_search_seen;
        seen.len = ngx_http_elearn_search_seen_len;

        if (ngx_http_elearn_search_key(r, &s->cache_key, &seen,
                                       s->suggest ? ":s:" : ":", s->digest)
            != NGX_OK)
        {
            return NGX_DECLINED;
        }

        s->local = ngx_http_elearn_search_local_get(r, s);
    }

    if (ngx_http_elearn_search_seen_len == 0 || s->local) {
        argv[0] = "GET";
        argvlen[0] = 3;

        rc = ngx_http_elearn_redis_command(r,
                                           ngx_http_elearn_search_version_got,
                                           s, 2, argv, argvlen);

    } else {
        argv[2] = (char *) s->cache_key.data;
        argvlen[2] = s->cache_key.len;

        rc = ngx_http_elearn_redis_command(r,
                                           ngx_http_elearn_search_mget_done,
                                           s, 3, argv, argvlen);
    }

    if (rc != NGX_AGAIN) {
        s->cache_key.len = 0;
        return NGX_DECLINED;
    }

    return NGX_AGAIN;
}


/*
 * A first page, the commonest request, is one MGET on a hit (above); the
 * script runs only on a miss and for the other pages.  NGX_AGAIN or the
 * answer.
 */
static ngx_int_t
ngx_http_elearn_search_cache_lookup(ngx_http_request_t *r,
    ngx_http_elearn_search_t *s, ngx_uint_t cached_page)
{
    ngx_http_elearn_main_conf_t  *emcf;

    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

    if (emcf->redis == NULL
        || (cached_page
            && ngx_http_elearn_search_digest(r, s, 1, s->digest) != NGX_OK))
    {
        return ngx_http_elearn_search_query(r, s);
    }

    s->cacheable = cached_page;

    if (!cached_page) {
        return ngx_http_elearn_search_eval(r, s);
    }

    if (ngx_http_elearn_search_entry_lookup(r, s) == NGX_AGAIN) {
        return NGX_AGAIN;
    }

    /* Redis is not connected: the script would not run either */

    ngx_http_elearn_metrics_cache(r, NGX_HTTP_ELEARN_CACHE_SEARCH, 0);
    ngx_http_elearn_metrics_cache(r, NGX_HTTP_ELEARN_CACHE_FACETS, 0);

    return ngx_http_elearn_search_query(r, s);
}


/* NGX_AGAIN, or the answer (a problem) to finalize with */
static ngx_int_t
ngx_http_elearn_suggest_query(ngx_http_request_t *r,
    ngx_http_elearn_search_t *s)
{
    ngx_int_t    rc;
    const char  *values[1];

    values[0] = ngx_http_elearn_search_param(r, s, NGX_HTTP_ELEARN_ARG_Q);
    if (values[0] == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_elearn_pg_query(r, NGX_HTTP_ELEARN_SQL_SUGGEST, 1, values,
                                  ngx_http_elearn_suggest_done, s);
    if (rc != NGX_AGAIN) {
        return ngx_http_elearn_problem_backend(r, rc, "the database");
    }

    return NGX_AGAIN;
}


/*
 * Suggestions are cached as pages are (an entry with an empty Link) under
 * search:{catalog version}:s:{sha256 of q}, looked up as a first page is
 * (one MGET on a hit).  NGX_AGAIN, NGX_DECLINED (no cache: query), or an
 * answer.
 */
static ngx_int_t
ngx_http_elearn_suggest_lookup(ngx_http_request_t *r,
    ngx_http_elearn_search_t *s)
{
    ngx_str_t                    *q;
    ngx_http_elearn_main_conf_t  *emcf;

    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);
    q = &s->args[NGX_HTTP_ELEARN_ARG_Q].value;

    if (emcf->redis == NULL
        || ngx_http_elearn_search_sha256(q->data, q->len, s->digest)
           != NGX_OK)
    {
        return NGX_DECLINED;
    }
    s->suggest = 1;

    return ngx_http_elearn_search_entry_lookup(r, s);
}


static void
ngx_http_elearn_suggest_done(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc, void *data)
{
    ngx_http_elearn_search_t *s = data;

    u_char     *buf, *p;
    size_t      len;
    ngx_str_t   body, empty = ngx_null_string;

    if (rc == NGX_OK
        && (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1))
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "elearn search: suggest failed: %s",
                      PQresultErrorMessage(res));
        rc = NGX_ERROR;
    }

    if (rc != NGX_OK) {
        ngx_http_elearn_finalize(r,
            ngx_http_elearn_problem_backend(r, rc, "the database"));
        return;
    }

    len = PQgetlength(res, 0, 0);

    buf = ngx_pnalloc(r->pool, len + sizeof("{\"suggestions\":}"));
    if (buf == NULL) {
        ngx_http_elearn_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    p = ngx_cpymem(buf, "{\"suggestions\":", sizeof("{\"suggestions\":") - 1);
    p = ngx_cpymem(p, PQgetvalue(res, 0, 0), len);
    *p++ = '}';

    body.data = buf;
    body.len = p - buf;
    ngx_http_elearn_search_cache_store(r, &s->cache_key, 0, &empty, &body);

    ngx_http_elearn_finalize(r,
                             ngx_http_elearn_send_json(r, NGX_HTTP_OK,
                                                       (char *) buf,
                                                       p - buf));
}


ngx_int_t
ngx_http_elearn_suggest(ngx_http_request_t *r, ngx_http_elearn_ctx_t *ctx)
{
    size_t                         chars;
    ngx_int_t                      rc;
    ngx_str_t                     *q;
    const char                    *bad;
    ngx_http_elearn_search_t      *s;
    ngx_http_elearn_main_conf_t   *emcf;
    ngx_http_elearn_field_error_t  err;

    emcf = ngx_http_get_module_main_conf(r, ngx_http_elearn_module);

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    s = ngx_pcalloc(r->pool, sizeof(ngx_http_elearn_search_t));
    if (s == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->data = s;
    ngx_http_elearn_search_args_init(s->args);

    bad = NULL;
    rc = ngx_http_elearn_search_parse_args(r, s->args, 1, &bad);
    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_DECLINED) {
        return ngx_http_elearn_problem(r, NGX_HTTP_BAD_REQUEST, "bad-query",
                                       "query parameter \"%s\" is repeated "
                                       "or not UTF-8 text", bad);
    }

    q = &s->args[NGX_HTTP_ELEARN_ARG_Q].value;
    chars = ngx_http_elearn_search_chars(q);

    if (ngx_http_elearn_search_blank(q)
        || chars > NGX_HTTP_ELEARN_SUGGEST_Q_MAX)
    {
        err.field = "q";
        err.message = "must be 1 to 100 characters";
        return ngx_http_elearn_problem_fields(r, "invalid suggest "
                                              "parameters", &err, 1);
    }

    if (emcf->pg == NULL) {
        return ngx_http_elearn_problem_backend(r,
                                               NGX_HTTP_SERVICE_UNAVAILABLE,
                                               "the database");
    }

    rc = ngx_http_elearn_suggest_lookup(r, s);

    if (rc == NGX_DECLINED) {
        ngx_http_elearn_metrics_cache(r, NGX_HTTP_ELEARN_CACHE_SUGGEST, 0);
        rc = ngx_http_elearn_suggest_query(r, s);
    }

    if (rc != NGX_AGAIN) {
        return rc;
    }

    ngx_http_elearn_wait(r);

    return NGX_DONE;
}
