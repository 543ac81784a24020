/* The emulator's token writer for fixed-timing replicas: the timer's drain loop in C.
 *
 * Why: at 100k tokens/s a Python drain costs ~5 us per token on top of the kernel's ~5 us
 * loopback write, so one core saturates below 100k tokens/s (docs/benchmarks/emulator_throughput.md). Here a
 * middle token costs one clock read, a few hundred bytes formatted and one send(2).
 *
 * Plain C, no Python API (loaded through ctypes.PyDLL, built by harness/native.py). What stays in
 * Python (harness/emulator/engine.py NativeFixedReplica): the first token of every stream, the
 * last one, every token of a faulted stream, a cancelled stream, and anything the kernel did not
 * take at once. em_drain returns to Python for each of those (a few per 128-token stream).
 *
 * Each stream holds a dup() of its socket: a client connection the event loop closes while the
 * stream is still queued here can never make a token land on a newer connection that reused
 * its descriptor number. Python releases the stream (and the dup) when it ends.
 *
 * Ground truth: per replica, histograms with exactly the layout of histogram.py's LogHistogram
 * (1-us buckets below 16384, then 64 per power of two) and the same "late episodes" rule as
 * groundtruth.py; Python folds them into its own when a summary is asked for.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define LINEAR 16384
#define SUB 64
#define E0 8                      /* bit_length(LINEAR) - 7 */
#define HSIZE (LINEAR + SUB * 40)
#define EPISODES 32
#define EPISODE_GAP_NS 100000000LL
#define CHUNK_CAP 4096

enum { EM_FIRST = 0, EM_IDLE = 1, EM_SLICE = 2, EM_PY = 3, EM_CANCELLED = 4, EM_PARTIAL = 5 };
enum { K_TGI = 0, K_OPENAI = 1, K_SILENT = 2 };
enum { F_PY = 1, F_CANCEL = 2 };

typedef struct {
    uint64_t counts[HSIZE];
    int64_t max;                  /* exact maximum of values >= LINEAR */
    int64_t negative;
} em_hist;

typedef struct {
    em_hist lat, itl;
    int64_t tokens_sent, tokens_buffered;
    int64_t ep[EPISODES][4];      /* [first ns, last ns, writes, worst us], a ring */
    int32_t ep_n, ep_next;
} em_gt;

typedef struct {
    int fd;                       /* our dup of the client's socket; -1: slot free */
    int32_t flags, kind;
    int32_t k, max_new;
    int32_t next_free;
    uint64_t rid;
    int64_t last_ns;
    em_gt *gt;
    char *pre, *post;             /* OpenAI events: pre + text + post */
    int32_t pre_len, post_len;
} em_stream;

typedef struct { int64_t due; int32_t sid; int32_t pad; } em_entry;

typedef struct {
    em_entry *buf;
    uint64_t head, tail, mask;    /* FIFO: with one ITL for all, later tokens fall due in order */
    int64_t itl_ns;
} em_ring;

typedef struct {                  /* what em_drain leaves to Python */
    int32_t sid, k, last;
    int32_t rest_len;             /* EM_PARTIAL: how many unsent bytes em_rest() holds */
    int64_t due, last_ns;
} em_out;

typedef struct {
    em_stream *s;
    int32_t n_s, free_head;
    em_ring *rings;
    int32_t n_rings;
    const char *tgi_blob, *text_blob;   /* the vocabulary's pre-encoded JSON (tokenizer.py) */
    int32_t *tgi_off, *text_off;
    int32_t vocab;
    char chunk[CHUNK_CAP];
    char rest[CHUNK_CAP];
} em;

static inline int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline void hist_add(em_hist *h, int64_t v) {
    if (v < LINEAR) {
        if (v < 0) { h->negative++; v = 0; }
        h->counts[v]++;
        return;
    }
    int e = 64 - __builtin_clzll((uint64_t)v) - 7;
    int64_t idx = LINEAR + (int64_t)(e - E0) * SUB + (v >> e) - SUB;
    if (idx >= HSIZE) idx = HSIZE - 1;
    h->counts[idx]++;
    if (v > h->max) h->max = v;
}

static void late(em_gt *g, int64_t now, int64_t us) {
    if (g->ep_n) {
        int64_t *e = g->ep[(g->ep_next + EPISODES - 1) % EPISODES];
        if (now - e[1] < EPISODE_GAP_NS) {
            e[1] = now; e[2]++;
            if (us > e[3]) e[3] = us;
            return;
        }
    }
    int64_t *e = g->ep[g->ep_next];
    e[0] = e[1] = now; e[2] = 1; e[3] = us;
    g->ep_next = (g->ep_next + 1) % EPISODES;
    if (g->ep_n < EPISODES) g->ep_n++;
}

/* -- set-up ---------------------------------------------------------------------------------- */
em *em_new(const char *tgi_blob, const int32_t *tgi_off, const char *text_blob, const int32_t *text_off,
           int32_t vocab) {
    em *e = calloc(1, sizeof(em));
    if (!e) return NULL;
    size_t tl = (size_t)tgi_off[vocab], xl = (size_t)text_off[vocab];
    char *a = malloc(tl + 1), *b = malloc(xl + 1);
    int32_t *ao = malloc(sizeof(int32_t) * (vocab + 1)), *bo = malloc(sizeof(int32_t) * (vocab + 1));
    if (!a || !b || !ao || !bo) { free(a); free(b); free(ao); free(bo); free(e); return NULL; }
    memcpy(a, tgi_blob, tl); memcpy(b, text_blob, xl);
    memcpy(ao, tgi_off, sizeof(int32_t) * (vocab + 1)); memcpy(bo, text_off, sizeof(int32_t) * (vocab + 1));
    e->tgi_blob = a; e->text_blob = b; e->tgi_off = ao; e->text_off = bo; e->vocab = vocab;
    e->free_head = -1;
    return e;
}

void em_free(em *e) {
    if (!e) return;
    for (int32_t i = 0; i < e->n_s; i++) {
        if (e->s[i].fd >= 0) close(e->s[i].fd);
        free(e->s[i].pre); free(e->s[i].post);
    }
    for (int32_t i = 0; i < e->n_rings; i++) free(e->rings[i].buf);
    free(e->s); free(e->rings);
    free((void *)e->tgi_blob); free((void *)e->text_blob); free(e->tgi_off); free(e->text_off);
    free(e);
}

em_gt *em_gt_new(void) { return calloc(1, sizeof(em_gt)); }
void em_gt_free(em_gt *g) { free(g); }
void em_gt_clear(em_gt *g) { memset(g, 0, sizeof(em_gt)); }

int32_t em_ring_new(em *e, int64_t itl_ns) {
    em_ring *r = realloc(e->rings, sizeof(em_ring) * (e->n_rings + 1));
    if (!r) return -1;
    e->rings = r;
    em_ring *q = &r[e->n_rings];
    q->mask = 1023;
    q->buf = malloc(sizeof(em_entry) * (q->mask + 1));
    if (!q->buf) return -1;
    q->head = q->tail = 0;
    q->itl_ns = itl_ns;
    return e->n_rings++;
}

static int push(em_ring *r, int64_t due, int32_t sid) {
    if (r->tail - r->head > r->mask) {            /* full: double, keeping FIFO order */
        uint64_t n = r->mask + 1;
        em_entry *b = malloc(sizeof(em_entry) * n * 2);
        if (!b) return -1;
        for (uint64_t i = 0; i < n; i++) b[i] = r->buf[(r->head + i) & r->mask];
        free(r->buf);
        r->buf = b; r->head = 0; r->tail = n; r->mask = n * 2 - 1;
    }
    em_entry *x = &r->buf[r->tail & r->mask];
    x->due = due; x->sid = sid;
    r->tail++;
    return 0;
}

int64_t em_head(em *e, int32_t ring) {
    em_ring *r = &e->rings[ring];
    return r->head == r->tail ? INT64_MAX : r->buf[r->head & r->mask].due;
}

/* A stream whose k-th token (its first) was just written by Python; its next token is due at
 * `due`. Returns its id, or -1 (errno says why: the dup or an allocation failed). */
int32_t em_add(em *e, int32_t ring, int64_t due, int fd, uint64_t rid, int32_t k, int32_t max_new,
               int64_t last_ns, int32_t kind, int32_t flags, em_gt *gt,
               const char *pre, int32_t pre_len, const char *post, int32_t post_len) {
    int32_t sid = e->free_head;
    if (sid < 0) {
        int32_t n = e->n_s ? e->n_s * 2 : 256;
        em_stream *s = realloc(e->s, sizeof(em_stream) * n);
        if (!s) return -1;
        for (int32_t i = e->n_s; i < n; i++) { s[i].fd = -1; s[i].next_free = i + 1 < n ? i + 1 : -1;
                                               s[i].pre = s[i].post = NULL; }
        e->s = s; e->free_head = e->n_s; e->n_s = n;
        sid = e->free_head;
    }
    em_stream *s = &e->s[sid];
    int dfd = fd >= 0 ? dup(fd) : -1;
    if (fd >= 0 && dfd < 0) return -1;
    if (kind == K_OPENAI || kind == K_TGI) {     /* K_TGI: pre is the SSE framing, `data: ` or `data:` */
        s->pre = malloc(pre_len + 1); s->post = malloc(post_len + 1);
        if (!s->pre || !s->post || pre_len + post_len + 512 > CHUNK_CAP) {
            free(s->pre); free(s->post); s->pre = s->post = NULL;
            if (dfd >= 0) close(dfd);
            errno = ENOMEM;
            return -1;
        }
        memcpy(s->pre, pre, pre_len); memcpy(s->post, post, post_len);
        s->pre_len = pre_len; s->post_len = post_len;
    }
    if (push(&e->rings[ring], due, sid) < 0) {
        free(s->pre); free(s->post); s->pre = s->post = NULL;
        if (dfd >= 0) close(dfd);
        errno = ENOMEM;
        return -1;
    }
    e->free_head = s->next_free;
    s->fd = dfd < 0 ? -2 : dfd;   /* -2: in use without a socket (a silent stream) */
    s->flags = flags; s->kind = kind; s->k = k; s->max_new = max_new;
    s->rid = rid; s->last_ns = last_ns; s->gt = gt;
    return sid;
}

void em_flag(em *e, int32_t sid, int32_t flags) { e->s[sid].flags |= flags; }
int64_t em_last_ns(em *e, int32_t sid) { return e->s[sid].last_ns; }

/* The stream ended (its last token went out through Python, or it was cancelled): no longer
 * queued anywhere. Closes our dup of its socket. */
void em_release(em *e, int32_t sid) {
    em_stream *s = &e->s[sid];
    if (s->fd >= 0) close(s->fd);
    s->fd = -1;
    free(s->pre); free(s->post); s->pre = s->post = NULL;
    s->next_free = e->free_head;
    e->free_head = sid;
}

const char *em_rest(em *e) { return e->rest; }

/* -- the hot path ---------------------------------------------------------------------------- */
static char *put_u(char *p, uint64_t v) {
    char t[24]; int n = 0;
    do { t[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    while (n) *p++ = t[--n];
    return p;
}

static char *put(char *p, const char *s, size_t n) { memcpy(p, s, n); return p + n; }
#define PUTS(p, lit) put((p), (lit), sizeof(lit) - 1)

/* One middle token's event framed as one HTTP chunk; its length. The bytes are wire.py's
 * TgiStream.chunk / _OpenAIStream.chunk (tests compare them). */
static int32_t format(em *e, em_stream *s, int32_t k) {
    int32_t w = (int32_t)((s->rid * 31 + (uint64_t)(k - 1) * 7) % (uint64_t)e->vocab);
    char *body = e->chunk + 16, *p = body;
    if (s->kind == K_TGI) {
        p = put(p, s->pre, s->pre_len);
        p = PUTS(p, "{\"index\":");
        p = put_u(p, (uint64_t)k);
        p = PUTS(p, ",\"token\":");
        p = put(p, e->tgi_blob + e->tgi_off[w], e->tgi_off[w + 1] - e->tgi_off[w]);
        p = PUTS(p, ",\"generated_text\":null,\"details\":null}\n\n");
    } else {
        p = put(p, s->pre, s->pre_len);
        p = put(p, e->text_blob + e->text_off[w], e->text_off[w + 1] - e->text_off[w]);
        p = put(p, s->post, s->post_len);
    }
    int32_t n = (int32_t)(p - body);
    p = PUTS(p, "\r\n");
    static const char hex[] = "0123456789abcdef";
    char h[12]; int hn = 0;
    uint32_t v = (uint32_t)n;
    do { h[hn++] = hex[v & 15]; v >>= 4; } while (v);
    char *start = body - hn - 2;
    char *q = start;
    while (hn) *q++ = h[--hn];
    *q++ = '\r'; *q++ = '\n';
    int32_t len = (int32_t)(p - start);
    if (start != e->chunk) memmove(e->chunk, start, len);
    return len;
}

/* Write every queued token of `ring` that is due now and due before `limit` (the earliest first
 * token Python holds: ties go to Python, as the Python drain orders them), until one needs
 * Python or `stop_ns` passes. */
int em_drain(em *e, int32_t ring, int64_t limit, int64_t stop_ns, em_out *o) {
    em_ring *r = &e->rings[ring];
    int64_t now = now_ns();
    uint32_t n = 0;
    while (r->head != r->tail) {
        em_entry x = r->buf[r->head & r->mask];
        if (x.due >= limit) return EM_FIRST;
        if (x.due > now) {
            now = now_ns();
            if (x.due > now) return EM_IDLE;
        }
        if ((++n & 31) == 0 && now_ns() > stop_ns) return EM_SLICE;
        r->head++;
        em_stream *s = &e->s[x.sid];
        o->sid = x.sid; o->due = x.due;
        if (s->flags & F_CANCEL) {
            o->k = s->k; o->last = 0; o->last_ns = s->last_ns;
            return EM_CANCELLED;
        }
        int32_t k = ++s->k;
        int last = k >= s->max_new;
        if (!last && push(r, x.due + r->itl_ns, x.sid) < 0) {
            last = 1;      /* cannot requeue (out of memory): Python ends it as cancelled */
            s->flags |= F_CANCEL;
        }
        if (last || (s->flags & F_PY)) {
            o->k = k; o->last = last; o->last_ns = s->last_ns;
            return (s->flags & F_CANCEL) ? EM_CANCELLED : EM_PY;
        }
        if (s->kind == K_SILENT) continue;
        int32_t len = format(e, s, k);
        ssize_t w = send(s->fd, e->chunk, (size_t)len, MSG_NOSIGNAL | MSG_DONTWAIT);
        now = now_ns();
        em_gt *g = s->gt;
        int64_t v = (now - x.due) / 1000;
        if (v < LINEAR && v >= 0) g->lat.counts[v]++;
        else { hist_add(&g->lat, v); if (v > 0) late(g, now, v); }
        hist_add(&g->itl, (now - s->last_ns) / 1000);
        s->last_ns = now;
        g->tokens_sent++;
        if (w != len) {            /* the kernel took part or none: Python queues the rest */
            int32_t off = w > 0 ? (int32_t)w : 0;
            memcpy(e->rest, e->chunk + off, (size_t)(len - off));
            g->tokens_buffered++;
            s->flags |= F_PY;      /* from now on its bytes go through the event loop, in order */
            o->k = k; o->last = 0; o->last_ns = now;
            o->rest_len = len - off;  /* an error (w < 0) sends nothing: the transport reports it */
            return EM_PARTIAL;
        }
    }
    return EM_FIRST;               /* nothing queued here: Python's first tokens, if any, are next */
}

/* Test hook: the chunk em_drain would write for token k of a stream (wire.py's bytes). */
int32_t em_format(em *e, int32_t sid, int32_t k, char *out) {
    int32_t len = format(e, &e->s[sid], k);
    memcpy(out, e->chunk, (size_t)len);
    return len;
}

/* Layout checks for the ctypes views. */
int32_t em_sizeof_gt(void) { return (int32_t)sizeof(em_gt); }
int32_t em_sizeof_out(void) { return (int32_t)sizeof(em_out); }
int32_t em_hsize(void) { return HSIZE; }
