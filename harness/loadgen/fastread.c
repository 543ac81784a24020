/* One read pass of the stream reader in C (harness/loadgen/native.py loads it through ctypes).
 *
 * Why: at ~100k tokens/s the Python pass (epoll list, recvmsg tuple, cmsg unpack, the plain-token
 * check, the ITL append) costs more than the kernel's own work per token. This does exactly what
 * Reactor._pump does, and handles in place the one read that is most of a stream: a whole chunk
 * carrying one whole plain token event (``HEX\r\ndata:{...}\n\n\r\n`` or ``data: {``, the same
 * test as _Response.feed's in-place path and PlainShape.match in harness/protocols/base.py), or
 * several such chunks back to back (a reader that fell
 * behind). Such a read only stamps its tokens into the socket's slot
 * (first time, last time, token count, ITLs). Every other read (a response head, the final event,
 * an error event, EOF, a socket error, a chunk split across reads, a full ITL buffer) is copied
 * out for Python, which first takes the slot's tokens over (Reactor._pump_native). Python decides
 * when a slot may take the in-place path (fr_enable); it stops the path and clears the slot by
 * writing the slot's fields itself when it takes the tokens over (reactor._drain).
 *
 * Plain C with no Python API: any Python can load it, and the pure-Python pass stays the fallback.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>

#define RECV 65536
#define ITL_CAP 512         /* ITLs a slot keeps before the next token goes to Python (which drains) */
#define MAX_EVENTS 4096
#define PAT 96

typedef struct {
    int64_t first;          /* perf_counter_ns of the first token taken here, 0: none */
    int64_t last;           /* of the last token (ITL base) */
    int32_t tokens;         /* tokens taken here since Python last drained the slot */
    int32_t n_itl;
    int32_t on;             /* Python allows the in-place path for this socket's next reads */
    int32_t has_first;      /* the response's first token has been seen (by Python or here) */
    int64_t itl[ITL_CAP];
} fr_slot;

typedef struct {            /* what Python reads back per read it must handle */
    int32_t fd;
    int32_t len;            /* > 0 bytes at buf[off]; 0 EOF; < 0 -errno */
    int64_t off;
    int64_t t;              /* perf_counter_ns scale */
} fr_out;

/* The plain token shape (PlainShape): pre, suf, need, text, avoid, avoid_text */
enum { P_PRE, P_SUF, P_NEED, P_TEXT, P_AVOID, P_AVOID_TEXT, NPAT };

typedef struct {
    int epfd;
    char pat[NPAT][PAT];
    int pat_len[NPAT], plain;
    fr_slot **slots;        /* by fd */
    int nslots;
    unsigned char *buf;     /* reads handed to Python */
    size_t buf_cap;
    fr_out *out;
    int out_cap;
    struct epoll_event ev[MAX_EVENTS];
    unsigned char scratch[RECV];
    /* per pass, for reader health */
    int64_t oldest;         /* stamp of the first socket read in the pass (epoll order), 0: none */
    int32_t ready;
    int64_t handled;        /* tokens taken in place, all time (diagnosis) */
    int timing;             /* diagnosis (fr_set_timing): time each system call of a pass */
    int64_t max_call;       /* the pass's slowest epoll_wait or recvmsg, ns (with timing) */
} fr_ctx;

static int64_t clock_ns(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void copy_pat(char *dst, int *len, const char *src, int n) {
    if (n < 0 || n > PAT) n = 0;
    memcpy(dst, src, n);
    *len = n;
}

fr_ctx *fr_new(int epfd, const char *pre, int pre_len, const char *suf, int suf_len,
               const char *need, int need_len, const char *text, int text_len,
               const char *avoid, int avoid_len, const char *avoid_text, int avoid_text_len, int plain) {
    fr_ctx *c = calloc(1, sizeof(fr_ctx));
    if (!c) return NULL;
    c->epfd = epfd;
    const char *src[NPAT] = { pre, suf, need, text, avoid, avoid_text };
    int len[NPAT] = { pre_len, suf_len, need_len, text_len, avoid_len, avoid_text_len };
    c->plain = plain;
    for (int i = 0; i < NPAT; i++) {
        if (len[i] < 0 || len[i] > PAT) c->plain = 0;   /* a shape this pass cannot hold: never in place */
        copy_pat(c->pat[i], &c->pat_len[i], src[i], len[i]);
    }
    c->out_cap = MAX_EVENTS;
    c->out = calloc(c->out_cap, sizeof(fr_out));
    c->buf_cap = (size_t)32 * RECV;
    c->buf = malloc(c->buf_cap);
    if (!c->out || !c->buf) {
        free(c->out); free(c->buf); free(c);
        return NULL;
    }
    return c;
}

void fr_free(fr_ctx *c) {
    if (!c) return;
    for (int i = 0; i < c->nslots; i++) free(c->slots[i]);
    free(c->slots); free(c->out); free(c->buf); free(c);
}

/* sizes Python's ctypes views must match (harness/loadgen/native.py checks them on load) */
int fr_itl_cap(void) { return ITL_CAP; }
int fr_slot_size(void) { return (int)sizeof(fr_slot); }
int fr_out_size(void) { return (int)sizeof(fr_out); }
int fr_out_cap(fr_ctx *c) { return c->out_cap; }
long fr_buf_cap(fr_ctx *c) { return (long)c->buf_cap; }

unsigned char *fr_buf(fr_ctx *c) { return c->buf; }
fr_out *fr_outs(fr_ctx *c) { return c->out; }
int64_t fr_oldest(fr_ctx *c) { return c->oldest; }
int32_t fr_ready(fr_ctx *c) { return c->ready; }
int64_t fr_handled(fr_ctx *c) { return c->handled; }
int64_t fr_max_call(fr_ctx *c) { return c->max_call; }
void fr_set_timing(fr_ctx *c, int on) { c->timing = on; }

/* The slot of ``fd`` (made on first use), or NULL when out of memory. */
fr_slot *fr_slot_of(fr_ctx *c, int fd) {
    if (fd < 0) return NULL;
    if (fd >= c->nslots) {
        int n = c->nslots ? c->nslots : 1024;
        while (n <= fd) n *= 2;
        fr_slot **s = realloc(c->slots, n * sizeof(fr_slot *));
        if (!s) return NULL;
        memset(s + c->nslots, 0, (n - c->nslots) * sizeof(fr_slot *));
        c->slots = s;
        c->nslots = n;
    }
    if (!c->slots[fd]) c->slots[fd] = calloc(1, sizeof(fr_slot));
    return c->slots[fd];
}

/* Python allows the in-place path: the response is between events, ``last`` its last token. */
void fr_enable(fr_ctx *c, int fd, int has_first, int64_t last) {
    fr_slot *s = fr_slot_of(c, fd);
    if (!s) return;
    s->on = c->plain;
    s->has_first = has_first;
    s->last = last;
}

/* The chunk-size line at d: the offset of its CRLF, with the size in *size; -1 when d does not
 * start with 1-8 hex digits and a CRLF. */
static int chunk_head(const unsigned char *d, int n, long *size) {
    int nl = -1;
    for (int i = 1; i < 9 && i + 1 < n; i++)
        if (d[i] == '\r' && d[i + 1] == '\n') { nl = i; break; }
    if (nl < 0) return -1;
    long v = 0;
    for (int i = 0; i < nl; i++) {
        unsigned char ch = d[i];
        int x = (ch >= '0' && ch <= '9') ? ch - '0' : (ch >= 'a' && ch <= 'f') ? ch - 'a' + 10
              : (ch >= 'A' && ch <= 'F') ? ch - 'A' + 10 : -1;
        if (x < 0) return -1;
        v = v * 16 + x;
    }
    *size = v;
    return nl;
}

/* Where pattern k occurs in the payload p[0..n), or NULL; "followed by a non-quote byte" is
 * tested by the caller. */
static const unsigned char *find_pat(const fr_ctx *c, int k, const unsigned char *p, int n) {
    return memmem(p, n, c->pat[k], c->pat_len[k]);
}

/* A non-empty JSON string follows pattern k: found, and the next byte is not a quote. */
static int string_after(const fr_ctx *c, int k, const unsigned char *p, int n) {
    const unsigned char *at = find_pat(c, k, p, n);
    if (!at) return -1;                                 /* absent */
    const unsigned char *next = at + c->pat_len[k];
    return next < p + n && *next != '"';                /* 1: non-empty, 0: empty */
}

/* PlainShape.match on the payload p[0..n) (after "data:" and one optional space). */
static int shape_match(const fr_ctx *c, const unsigned char *p, int n) {
    int lp = c->pat_len[P_PRE], ls = c->pat_len[P_SUF];
    if (n < lp || memcmp(p, c->pat[P_PRE], lp) != 0) return 0;
    if (n < ls || memcmp(p + n - ls, c->pat[P_SUF], ls) != 0) return 0;
    if (c->pat_len[P_NEED] && !find_pat(c, P_NEED, p, n)) return 0;
    if (c->pat_len[P_TEXT] && string_after(c, P_TEXT, p, n) != 1) return 0;
    if (c->pat_len[P_AVOID] && find_pat(c, P_AVOID, p, n)) return 0;
    if (c->pat_len[P_AVOID_TEXT] && string_after(c, P_AVOID_TEXT, p, n) == 1) return 0;
    return 1;
}

/* shape_match for tests: the C and Python shape tests must agree on every payload. */
int fr_match(fr_ctx *c, const unsigned char *p, int n) { return c->plain && shape_match(c, p, n); }

/* The in-place test of _Response.feed: the whole chunk d[0..n), whose size line ends at nl,
 * carries one whole plain token event. */
static int plain_token(const fr_ctx *c, const unsigned char *d, int n, int nl) {
    if (n < 16 || memcmp(d + n - 4, "\n\n\r\n", 4) != 0) return 0;
    if (n < nl + 8 || memcmp(d + nl + 2, "data:", 5) != 0) return 0;
    int lines = 0;
    for (const unsigned char *p = d; (p = memchr(p, '\n', d + n - p)) != NULL; p++)
        if (++lines > 4) return 0;
    if (lines != 4) return 0;
    int start = nl + 7;
    if (d[start] == ' ') start++;
    return shape_match(c, d + start, n - 4 - start);
}

/* Whole plain token chunks back to back, and nothing else: how many (0: not such a read). A
 * reader that fell behind finds several tokens of a stream queued together; taking them here
 * keeps catching up cheap (in Python each costs the general parser, and a pass of them can hold
 * every other stream for over 10 ms, which merges more tokens: a feedback loop). */
static int plain_tokens(const fr_ctx *c, const unsigned char *d, int n) {
    int pos = 0, k = 0;
    while (pos < n) {
        long size;
        int nl = chunk_head(d + pos, n - pos, &size);
        if (nl < 0 || size <= 0) return 0;
        long len = (long)nl + 2 + size + 2;
        if (len > n - pos || !plain_token(c, d + pos, (int)len, nl)) return 0;
        pos += (int)len;
        k++;
    }
    return k;
}

/* One pass: every socket epoll says is ready, one recvmsg each. Returns how many reads Python
 * must handle (fr_outs); plain token reads of enabled slots are taken in place. */
int fr_pass(fr_ctx *c) {
    int64_t mono = clock_ns(CLOCK_MONOTONIC);
    int64_t off = clock_ns(CLOCK_REALTIME) - mono;   /* kernel stamps -> perf_counter_ns scale */
    c->oldest = 0;
    c->max_call = 0;
    int64_t t0 = c->timing ? clock_ns(CLOCK_MONOTONIC) : 0, t1;
    int n = epoll_wait(c->epfd, c->ev, MAX_EVENTS, 0);
    if (c->timing) {
        t1 = clock_ns(CLOCK_MONOTONIC);
        c->max_call = t1 - t0;
    }
    c->ready = n > 0 ? n : 0;
    int k = 0;
    size_t pos = 0;
    char anc[CMSG_SPACE(sizeof(struct timespec))];
    for (int i = 0; i < n; i++) {
        int fd = c->ev[i].data.fd;
        if (k >= c->out_cap || c->buf_cap - pos < RECV) break;   /* level-triggered: next pass */
        fr_slot *s = (fd >= 0 && fd < c->nslots) ? c->slots[fd] : NULL;
        int inplace = s && s->on;
        unsigned char *dst = inplace ? c->scratch : c->buf + pos;
        struct iovec iov = { dst, RECV };
        struct msghdr mh;
        memset(&mh, 0, sizeof mh);
        mh.msg_iov = &iov;
        mh.msg_iovlen = 1;
        mh.msg_control = anc;
        mh.msg_controllen = sizeof anc;
        if (c->timing) t0 = clock_ns(CLOCK_MONOTONIC);
        ssize_t got = recvmsg(fd, &mh, 0);
        if (c->timing) {
            t1 = clock_ns(CLOCK_MONOTONIC);
            if (t1 - t0 > c->max_call) c->max_call = t1 - t0;
        }
        if (got < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) continue;
            if (s) s->on = 0;
            c->out[k].fd = fd; c->out[k].len = -errno; c->out[k].off = 0;
            c->out[k++].t = clock_ns(CLOCK_MONOTONIC);
            continue;
        }
        int64_t t = 0;
        for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
            if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_TIMESTAMPNS) {
                struct timespec ts;
                memcpy(&ts, CMSG_DATA(cm), sizeof ts);
                t = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec - off;
                break;
            }
        }
        if (!t) t = clock_ns(CLOCK_MONOTONIC);
        if (!c->oldest) c->oldest = t;
        int ntok = (inplace && got > 0) ? plain_tokens(c, dst, (int)got) : 0;
        if (ntok > 0 && s->n_itl + ntok <= ITL_CAP) {
            /* tokens read together share the read's stamp, as in Python: ITLs after the first 0 */
            for (int j = 0; j < ntok; j++) {
                if (!s->has_first) {
                    s->has_first = 1;
                    s->first = t;
                } else {
                    s->itl[s->n_itl++] = t - s->last;
                }
                s->last = t;
                s->tokens++;
            }
            c->handled += ntok;
            continue;
        }
        if (inplace && got > 0) {                /* not a plain token: Python takes the bytes */
            memcpy(c->buf + pos, dst, got);
            dst = c->buf + pos;
        }
        /* Python re-enables the in-place path once it has handled this read (fr_enable); until
         * then a further pass must copy this socket's reads out after it, never take them in
         * place ahead of it (Reactor._pump_native may run a pass before handling every read) */
        if (s) s->on = 0;
        c->out[k].fd = fd;
        c->out[k].len = (int32_t)got;
        c->out[k].off = (int64_t)pos;
        c->out[k++].t = t;
        pos += got;
    }
    return k;
}
