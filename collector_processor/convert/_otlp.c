/*
 * One pass over an encoded OTLP ExportMetricsServiceRequest, in C: the hub's fast path.
 *
 * Two functions, each the compiled twin of pure-Python code that stays the reference (and the
 * fallback when this module is not built):
 *
 *   scan(payload) -> (resource_metrics, points) | None
 *       For an export that protobuf's parser certainly takes and of which the hub refuses no
 *       point: its number of ResourceMetrics and of data points. None otherwise: then the receiver
 *       decodes it with protobuf and ``otlp_points.refused_points`` says which points and why.
 *
 *   requests(payload, app) -> (block, rows, consumers, residual) | None
 *       The `requests` rows of the export's delta exponential HTTP server histograms, already
 *       encoded as a ClickHouse RowBinary block in the table's column order (``storage.writer``),
 *       with the number of rows; the consumers seen on their duration points, as
 *       (env, identifier, minute_s, name, group) tuples; and the export's other metrics as a
 *       smaller encoded export for the Python converters (None if there are none). None when the
 *       export holds anything this pass does not do exactly as the Python converter would (a
 *       refused point, an HTTP metric in another form, an attribute of an unusual type, a field
 *       sent twice): the caller then converts the whole export in Python.
 *
 * The wire names and limits come from Python once (``configure``), so that each is spelled once,
 * in tallyhub/wire.py and the converters. The payload was parsed by the receiver before it was
 * queued, so it is well-formed protobuf with valid UTF-8 strings; anything else is answered with
 * None all the same.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const uint8_t *p;
    Py_ssize_t n;
} Slice;

/* ---------------------------------------------------------------- configuration (from Python) */

enum { F_DURATION = 0, F_REQUEST_SIZE = 1, F_RESPONSE_SIZE = 2, N_FIELDS = 3 };
enum { A_METHOD, A_OLD_METHOD, A_ROUTE, A_TARGET, A_STATUS, A_OLD_STATUS, A_CONSUMER, A_CONSUMER_NAME,
       A_CONSUMER_GROUP, A_OVERFLOW, N_ATTRS };
enum { R_ENV, R_OLD_ENV, R_SERVICE, R_INSTANCE, N_RES };

#define MAX_METRIC_NAMES 16
static struct {
    int ready;
    Slice metric_names[MAX_METRIC_NAMES];
    int metric_fields[MAX_METRIC_NAMES];
    int n_metric_names;
    Slice duration_name; /* the one whose points carry consumers */
    Slice seconds_units[2]; /* units of a duration that need no conversion: "s" and "" */
    Slice attrs[N_ATTRS];
    Slice res[N_RES];
    Slice checked_sum_prefix; /* sums whose values must be counts ("tallyhub.") */
    Slice overflow_route;
    int64_t max_points, max_attributes, storage_scale, min_scale, max_scale;
    uint64_t max_time_ns, max_count;
    int64_t stored_index_low, stored_index_high; /* half-open */
    Py_ssize_t max_consumer_id, max_consumer_name;
    PyObject *keep; /* the configured strings, kept alive: the slices above point into them */
} cfg;

static int slice_eq(Slice a, Slice b) { return a.n == b.n && (a.n == 0 || memcmp(a.p, b.p, a.n) == 0); }
static int slice_starts(Slice a, Slice prefix) { return a.n >= prefix.n && memcmp(a.p, prefix.p, prefix.n) == 0; }

/* ---------------------------------------------------------------- protobuf wire reading */

typedef struct {
    const uint8_t *p, *end;
} Reader;

typedef struct {
    uint32_t number;
    int type;        /* 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32 */
    uint64_t u;      /* varint or fixed value */
    Slice s;         /* length-delimited contents */
    const uint8_t *start; /* the field's first byte (tag), for copying it as it is */
} Field;

static int read_varint(Reader *r, uint64_t *out) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64 && r->p < r->end; shift += 7) {
        uint8_t b = *r->p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return 1;
        }
    }
    return 0;
}

/* 1: a field read; 0: end of message; -1: malformed (or groups, which OTLP never uses). */
static int next_field(Reader *r, Field *f) {
    if (r->p >= r->end) return 0;
    f->start = r->p;
    uint64_t tag;
    if (!read_varint(r, &tag) || (tag >> 3) == 0 || (tag >> 3) > 0x1fffffff) return -1;
    f->number = (uint32_t)(tag >> 3);
    f->type = (int)(tag & 7);
    switch (f->type) {
    case 0:
        return read_varint(r, &f->u) ? 1 : -1;
    case 1:
        if (r->end - r->p < 8) return -1;
        memcpy(&f->u, r->p, 8); /* little-endian hosts only: checked at import */
        r->p += 8;
        return 1;
    case 5: {
        uint32_t v;
        if (r->end - r->p < 4) return -1;
        memcpy(&v, r->p, 4);
        f->u = v;
        r->p += 4;
        return 1;
    }
    case 2: {
        uint64_t n;
        if (!read_varint(r, &n) || n > (uint64_t)(r->end - r->p)) return -1;
        f->s.p = r->p;
        f->s.n = (Py_ssize_t)n;
        r->p += n;
        return 1;
    }
    default:
        return -1;
    }
}

static Reader reader_of(Slice s) {
    Reader r = {s.p, s.p + s.n};
    return r;
}

static double as_double(uint64_t u) {
    double d;
    memcpy(&d, &u, 8);
    return d;
}

static int32_t zigzag32(uint64_t v) {
    uint32_t u = (uint32_t)v;
    return (int32_t)((u >> 1) ^ (~(u & 1) + 1));
}

/* ---------------------------------------------------------------- growable buffers */

typedef struct {
    uint8_t *p;
    Py_ssize_t n, cap;
} Buf;

static int buf_reserve(Buf *b, Py_ssize_t more) {
    if (b->n + more <= b->cap) return 1;
    Py_ssize_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + more) cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (!p) return 0;
    b->p = p;
    b->cap = cap;
    return 1;
}

static int buf_put(Buf *b, const void *data, Py_ssize_t n) {
    if (!buf_reserve(b, n)) return 0;
    if (n) memcpy(b->p + b->n, data, n);
    b->n += n;
    return 1;
}

static int buf_varint(Buf *b, uint64_t v) {
    uint8_t tmp[10];
    int n = 0;
    do {
        tmp[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    return buf_put(b, tmp, n);
}

static int buf_string(Buf *b, Slice s) { return buf_varint(b, (uint64_t)s.n) && buf_put(b, s.p, s.n); }

/* A length-delimited field: tag, length, contents. */
static int buf_message(Buf *b, uint32_t number, const Buf *contents) {
    return buf_varint(b, ((uint64_t)number << 3) | 2) && buf_varint(b, (uint64_t)contents->n) &&
           buf_put(b, contents->p, contents->n);
}

/* ---------------------------------------------------------------- attributes */

enum { K_NONE = 0, K_STRING = 1, K_BOOL = 2, K_INT = 3, K_DOUBLE = 4, K_OTHER = 5 };

typedef struct {
    int kind;
    Slice s;
    uint64_t u;
} Value;

/* The value of an AnyValue: its last oneof field wins, as in protobuf. -1 if malformed or if the
   AnyValue message is sent in two parts (protobuf would merge them: left to Python). */
static int any_value(Slice s, Value *v) {
    Reader r = reader_of(s);
    Field f;
    int rc;
    v->kind = K_NONE;
    while ((rc = next_field(&r, &f)) > 0) {
        switch (f.number) {
        case 1:
            if (f.type != 2) return -1;
            v->kind = K_STRING;
            v->s = f.s;
            break;
        case 2:
            if (f.type != 0) return -1;
            v->kind = K_BOOL;
            v->u = f.u;
            break;
        case 3:
            if (f.type != 0) return -1;
            v->kind = K_INT;
            v->u = f.u;
            break;
        case 4:
            if (f.type != 1) return -1;
            v->kind = K_DOUBLE;
            v->u = f.u;
            break;
        case 5: case 6: case 7: case 8: /* array, kvlist, bytes, string_value_strindex */
            v->kind = K_OTHER;
            break;
        default:
            break;
        }
    }
    return rc;
}

/* One KeyValue: its key and value. -1 if malformed or a part is sent twice. */
static int key_value(Slice s, Slice *key, Value *v) {
    Reader r = reader_of(s);
    Field f;
    int rc, keys = 0, values = 0;
    key->p = (const uint8_t *)"";
    key->n = 0;
    v->kind = K_NONE;
    while ((rc = next_field(&r, &f)) > 0) {
        if (f.number == 1) {
            if (f.type != 2) return -1;
            *key = f.s;
            keys++;
        } else if (f.number == 2) {
            if (f.type != 2 || values++ || any_value(f.s, v) < 0) return -1;
        }
    }
    return rc < 0 || keys > 1 ? -1 : 0;
}

/* The attributes the converters read, as ``attribute_map`` keeps them (the last value of a key
   wins; a value of no kind is ignored). */
typedef struct {
    Value v[N_ATTRS];
    int64_t count;    /* KeyValues, for the attribute limit */
    int bad_status;   /* a status the hub refuses, or one that only Python can judge */
} Attrs;

static int point_attribute(Attrs *a, Slice s) {
    Slice key;
    Value v;
    if (key_value(s, &key, &v) < 0) return -1;
    a->count++;
    for (int i = 0; i < N_ATTRS; i++) {
        if (!slice_eq(key, cfg.attrs[i])) continue;
        if ((i == A_STATUS || i == A_OLD_STATUS)) {
            /* otlp_points.out_of_range: every status attribute must be within 0..65535 */
            if (v.kind == K_INT && (int64_t)v.u >= 0 && (int64_t)v.u <= 65535) {
            } else if (v.kind == K_DOUBLE || v.kind == K_STRING || v.kind == K_INT) {
                a->bad_status = 1;
            }
        }
        if (v.kind != K_NONE) a->v[i] = v;
        break;
    }
    return 0;
}

/* ---------------------------------------------------------------- rows */

typedef struct {
    int32_t *index;
    uint64_t *count;
    Py_ssize_t n, cap;
} Buckets;

typedef struct {
    uint32_t minute;
    Slice env, service, instance, consumer, method, route;
    uint16_t status;
    uint64_t requests;
    double sums[N_FIELDS];
    double dmin, dmax;
    Buckets buckets[N_FIELDS];
    uint64_t hash;
} Row;

typedef struct {
    Row *rows;
    Py_ssize_t n, cap;
    Py_ssize_t *table; /* open addressing: row index + 1, 0 = empty */
    Py_ssize_t slots;
} Rows;

static uint64_t hash_bytes(uint64_t h, Slice s) {
    for (Py_ssize_t i = 0; i < s.n; i++) h = (h ^ s.p[i]) * 1099511628211ULL;
    return (h ^ 0xff) * 1099511628211ULL; /* a separator, so that ("ab", "c") != ("a", "bc") */
}

static uint64_t row_hash(const Row *k) {
    uint64_t h = 1469598103934665603ULL ^ k->minute;
    h = (h ^ k->status) * 1099511628211ULL;
    h = hash_bytes(h, k->env);
    h = hash_bytes(h, k->service);
    h = hash_bytes(h, k->instance);
    h = hash_bytes(h, k->consumer);
    h = hash_bytes(h, k->method);
    return hash_bytes(h, k->route);
}

static int same_key(const Row *a, const Row *b) {
    return a->minute == b->minute && a->status == b->status && slice_eq(a->env, b->env) &&
           slice_eq(a->service, b->service) && slice_eq(a->instance, b->instance) &&
           slice_eq(a->consumer, b->consumer) && slice_eq(a->method, b->method) && slice_eq(a->route, b->route);
}

static Row invalid_row; /* row_for's answer for a key that is not valid UTF-8 */

static int rows_grow_table(Rows *rows) {
    Py_ssize_t slots = rows->slots ? rows->slots * 2 : 256;
    Py_ssize_t *table = calloc(slots, sizeof(Py_ssize_t));
    if (!table) return 0;
    for (Py_ssize_t i = 0; i < rows->n; i++) {
        Py_ssize_t at = (Py_ssize_t)(rows->rows[i].hash & (uint64_t)(slots - 1));
        while (table[at]) at = (at + 1) & (slots - 1);
        table[at] = i + 1;
    }
    free(rows->table);
    rows->table = table;
    rows->slots = slots;
    return 1;
}

/* Whether a string is valid UTF-8 (the receiver's parser checked every string before the export
   was queued; this pass does not rely on it). */
static int valid_utf8(Slice s) {
    Py_ssize_t i = 0;
    while (i < s.n) {
        uint8_t c = s.p[i];
        int more;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            more = 1;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            more = 2;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            more = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (i + more >= s.n) return 0;
        for (int k = 1; k <= more; k++) {
            if ((s.p[i + k] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (s.p[i + k] & 0x3F);
        }
        if ((more == 1 && cp < 0x80) || (more == 2 && cp < 0x800) || (more == 3 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += more + 1;
    }
    return 1;
}

static int valid_key(const Row *k) {
    return valid_utf8(k->env) && valid_utf8(k->service) && valid_utf8(k->instance) && valid_utf8(k->consumer) &&
           valid_utf8(k->method) && valid_utf8(k->route);
}

/* The row of ``key``'s series and minute, made on first sight (rows keep their first-seen order). */
static Row *row_for(Rows *rows, Row *key) {
    if ((rows->n + 1) * 2 > rows->slots && !rows_grow_table(rows)) return NULL;
    key->hash = row_hash(key);
    Py_ssize_t at = (Py_ssize_t)(key->hash & (uint64_t)(rows->slots - 1));
    while (rows->table[at]) {
        Row *row = &rows->rows[rows->table[at] - 1];
        if (row->hash == key->hash && same_key(row, key)) return row;
        at = (at + 1) & (rows->slots - 1);
    }
    if (rows->n == rows->cap) {
        Py_ssize_t cap = rows->cap ? rows->cap * 2 : 64;
        Row *grown = realloc(rows->rows, cap * sizeof(Row));
        if (!grown) return NULL;
        rows->rows = grown;
        rows->cap = cap;
    }
    Row *row = &rows->rows[rows->n];
    if (!valid_key(key)) return &invalid_row;
    *row = *key;
    row->requests = 0;
    row->dmin = row->dmax = 0.0;
    for (int i = 0; i < N_FIELDS; i++) {
        row->sums[i] = 0.0;
        memset(&row->buckets[i], 0, sizeof(Buckets));
    }
    rows->table[at] = ++rows->n;
    return row;
}

static void rows_free(Rows *rows) {
    for (Py_ssize_t i = 0; i < rows->n; i++)
        for (int f = 0; f < N_FIELDS; f++) {
            free(rows->rows[i].buckets[f].index);
            free(rows->rows[i].buckets[f].count);
        }
    free(rows->rows);
    free(rows->table);
    memset(rows, 0, sizeof(Rows));
}

static int buckets_reserve(Buckets *b, Py_ssize_t n) {
    if (n <= b->cap) return 1;
    int32_t *index = realloc(b->index, n * sizeof(int32_t));
    if (!index) return 0;
    b->index = index;
    uint64_t *count = realloc(b->count, n * sizeof(uint64_t));
    if (!count) return 0;
    b->count = count;
    b->cap = n;
    return 1;
}

/* ``add`` (ascending indexes) merged into ``into`` (ascending), counts of one index added up. */
static int buckets_merge(Buckets *into, const Buckets *add) {
    if (!add->n) return 1;
    if (!into->n) {
        if (!buckets_reserve(into, add->n)) return 0;
        memcpy(into->index, add->index, add->n * sizeof(int32_t));
        memcpy(into->count, add->count, add->n * sizeof(uint64_t));
        into->n = add->n;
        return 1;
    }
    Buckets out = {0};
    if (!buckets_reserve(&out, into->n + add->n)) {
        free(out.index);
        free(out.count);
        return 0;
    }
    Py_ssize_t i = 0, j = 0;
    while (i < into->n || j < add->n) {
        if (j >= add->n || (i < into->n && into->index[i] < add->index[j])) {
            out.index[out.n] = into->index[i];
            out.count[out.n++] = into->count[i++];
        } else if (i >= into->n || add->index[j] < into->index[i]) {
            out.index[out.n] = add->index[j];
            out.count[out.n++] = add->count[j++];
        } else {
            out.index[out.n] = into->index[i];
            out.count[out.n++] = into->count[i++] + add->count[j++];
        }
    }
    free(into->index);
    free(into->count);
    *into = out;
    return 1;
}

/* ---------------------------------------------------------------- data points */

typedef struct {
    uint64_t time_ns, count, zero_count;
    int has_sum, has_min, has_max;
    double sum, min, max;
    int32_t scale;
    Slice positive, negative;
    int positive_seen, negative_seen;
    Attrs attrs;
} ExpPoint;

/* A Buckets message: its offset and its counts' total, and (with ``out``) the counts rescaled to
   the storage scale (http_points.rescale_buckets). 0 if refused or unusual, -1 on failure. */
static int exp_buckets(Slice s, int32_t scale, uint64_t *total, Buckets *out) {
    Reader r = reader_of(s);
    Field f;
    int rc;
    int32_t offset = 0;
    Slice packed[8];
    int n_packed = 0;
    int64_t length = 0;
    while ((rc = next_field(&r, &f)) > 0) {
        if (f.number == 1) {
            if (f.type != 0) return 0;
            offset = zigzag32(f.u);
        } else if (f.number == 2) {
            if (f.type != 2 || n_packed == 8) return 0; /* unpacked counts: left to Python */
            packed[n_packed++] = f.s;
        }
    }
    if (rc < 0) return 0;
    /* the number of counts: bytes that end a varint (no continuation bit) */
    for (int k = 0; k < n_packed; k++) {
        Py_ssize_t ends = 0;
        for (Py_ssize_t i = 0; i < packed[k].n; i++) ends += !(packed[k].p[i] & 0x80);
        if (packed[k].n && (packed[k].p[packed[k].n - 1] & 0x80)) return 0; /* a varint cut short */
        length += ends;
    }
    if (!length) return 1;
    /* otlp_points._storage_indexes_fit */
    int64_t shift = (int64_t)scale - cfg.storage_scale;
    int64_t first = offset, last = (int64_t)offset + length - 1;
    int64_t mapped0 = shift >= 0 ? first >> shift : first * ((int64_t)1 << -shift);
    int64_t mapped1 = shift >= 0 ? last >> shift : last * ((int64_t)1 << -shift);
    int64_t span = shift < 0 ? ((int64_t)1 << -shift) - 1 : 0;
    if (mapped0 < cfg.stored_index_low || mapped0 >= cfg.stored_index_high) return 0;
    if (mapped1 + span < cfg.stored_index_low || mapped1 + span >= cfg.stored_index_high) return 0;
    if (out && !buckets_reserve(out, out->n + length)) return -1;
    /* one pass: the total within the limit, and (with ``out``) each nonzero count at its storage index */
    int64_t index = offset;
    uint64_t sum = *total;
    for (int k = 0; k < n_packed; k++) {
        Reader c = reader_of(packed[k]);
        while (c.p < c.end) {
            uint64_t v;
            if (*c.p < 0x80) {
                v = *c.p++;
            } else if (!read_varint(&c, &v)) {
                return 0;
            }
            index++;
            if (!v) continue;
            if (v > cfg.max_count || sum > cfg.max_count - v) return 0;
            sum += v;
            if (!out) continue;
            int64_t i = index - 1;
            int32_t target = (int32_t)(shift >= 0 ? i >> shift : i * ((int64_t)1 << -shift) + ((int64_t)1 << (-shift - 1)));
            if (out->n && out->index[out->n - 1] == target) {
                out->count[out->n - 1] += v;
            } else {
                out->index[out->n] = target;
                out->count[out->n++] = v;
            }
        }
    }
    *total = sum;
    return 1;
}

/* The fields of an ExponentialHistogramDataPoint; 0 if a field is of an unexpected wire type. */
static int exp_point(Slice s, ExpPoint *pt) {
    Reader r = reader_of(s);
    Field f;
    int rc;
    memset(pt, 0, sizeof(*pt));
    while ((rc = next_field(&r, &f)) > 0) {
        switch (f.number) {
        case 1:
            if (f.type != 2 || point_attribute(&pt->attrs, f.s) < 0) return 0;
            break;
        case 3: if (f.type != 1) return 0; pt->time_ns = f.u; break;
        case 4: if (f.type != 1) return 0; pt->count = f.u; break;
        case 5: if (f.type != 1) return 0; pt->has_sum = 1; pt->sum = as_double(f.u); break;
        case 6: if (f.type != 0) return 0; pt->scale = zigzag32(f.u); break;
        case 7: if (f.type != 1) return 0; pt->zero_count = f.u; break;
        case 8: if (f.type != 2 || pt->positive_seen++) return 0; pt->positive = f.s; break;
        case 9: if (f.type != 2 || pt->negative_seen++) return 0; pt->negative = f.s; break;
        case 12: if (f.type != 1) return 0; pt->has_min = 1; pt->min = as_double(f.u); break;
        case 13: if (f.type != 1) return 0; pt->max = as_double(f.u); pt->has_max = 1; break;
        default: break;
        }
    }
    return rc == 0;
}

/* Whether the hub takes a point's common parts (otlp_points._all_points): attributes, time, status. */
static int point_ok(const Attrs *a, uint64_t time_ns) {
    return a->count <= cfg.max_attributes && time_ns > 0 && time_ns <= cfg.max_time_ns && !a->bad_status;
}

/* Checks one point of a metric that is not an HTTP histogram handled here: 1 if the hub stores it
   without question, 0 otherwise. ``kind`` is the Metric field number of its data. */
static int other_point_ok(Slice s, uint32_t kind, int checked_sum) {
    Reader r = reader_of(s);
    Field f;
    int rc;
    Attrs attrs;
    memset(&attrs, 0, sizeof(attrs));
    uint64_t time_ns = 0, count = 0, total = 0;
    uint32_t attributes_field = (kind == 10) ? 1 : (kind == 9) ? 9 : 7;
    int value_kind = 0;
    uint64_t value = 0;
    int32_t scale = 0;
    Slice sides[2];
    int n_sides = 0;
    while ((rc = next_field(&r, &f)) > 0) {
        if (f.number == attributes_field) {
            if (f.type != 2 || point_attribute(&attrs, f.s) < 0) return 0;
        } else if (f.number == 3) {
            if (f.type != 1) return 0;
            time_ns = f.u;
        } else if (kind == 5 || kind == 7) { /* NumberDataPoint */
            if (f.number == 4 || f.number == 6) {
                if (f.type != 1) return 0;
                value_kind = (int)f.number;
                value = f.u;
            }
        } else if (f.number == 4) { /* count of histograms and summaries */
            if (f.type != 1) return 0;
            count = f.u;
        } else if (kind == 9 && f.number == 6) { /* explicit bucket counts, packed fixed64 */
            if (f.type != 2 || f.s.n % 8) return 0;
            for (Py_ssize_t i = 0; i < f.s.n; i += 8) {
                uint64_t v;
                memcpy(&v, f.s.p + i, 8);
                if (v > cfg.max_count || total > cfg.max_count - v) return 0;
                total += v;
            }
        } else if (kind == 10) {
            if (f.number == 6) {
                if (f.type != 0) return 0;
                scale = zigzag32(f.u);
            } else if (f.number == 7) {
                if (f.type != 1 || f.u > cfg.max_count || total > cfg.max_count - f.u) return 0;
                total += f.u;
            } else if (f.number == 8 || f.number == 9) {
                if (f.type != 2 || n_sides == 2) return 0;
                sides[n_sides++] = f.s;
            }
        }
    }
    if (rc < 0 || !point_ok(&attrs, time_ns)) return 0;
    if ((kind == 9 || kind == 10 || kind == 11) && count > cfg.max_count) return 0;
    if (kind == 10) {
        if (scale < cfg.min_scale || scale > cfg.max_scale) return 0;
        for (int i = 0; i < n_sides; i++)
            if (exp_buckets(sides[i], scale, &total, NULL) != 1) return 0;
    }
    if (kind == 7 && checked_sum) {
        if (value_kind == 6) {
            int64_t v = (int64_t)value;
            if (v < -(int64_t)cfg.max_count || v > (int64_t)cfg.max_count) return 0;
        } else {
            double d = value_kind == 4 ? as_double(value) : 0.0;
            if (!(d >= -(double)cfg.max_count && d <= (double)cfg.max_count)) return 0;
        }
    }
    return 1;
}

/* ---------------------------------------------------------------- the pass */

typedef struct {
    Slice name, unit;
    uint32_t kind;        /* Metric field number of its data: 5 gauge, 7 sum, 9 histogram, 10 exp, 11 summary */
    Slice data;
    uint64_t temporality;
    int field;            /* index into cfg.metric_fields, or -1 */
    int handled;          /* an HTTP histogram this pass converts */
} MetricInfo;

typedef struct {
    Slice env, identifier, name, group;
    uint32_t minute;
} ConsumerSeen;

typedef struct {
    Rows rows;
    Buf residual;
    ConsumerSeen *consumers; /* made into Python tuples once the pass is over (it runs without the GIL) */
    Py_ssize_t n_consumers, cap_consumers;
    int64_t points;
    Py_ssize_t resources; /* ResourceMetrics messages */
    const uint8_t *converting; /* non-NULL: converting, not only scanning */
} Pass;

/* Reads a Metric. 0 if it holds anything this pass leaves to Python (the whole export then is). */
static int metric_info(Slice s, MetricInfo *m) {
    Reader r = reader_of(s);
    Field f;
    int rc, data_fields = 0;
    memset(m, 0, sizeof(*m));
    m->field = -1;
    m->unit.p = m->name.p = (const uint8_t *)"";
    while ((rc = next_field(&r, &f)) > 0) {
        switch (f.number) {
        case 1: if (f.type != 2) return 0; m->name = f.s; break;
        case 3: if (f.type != 2) return 0; m->unit = f.s; break;
        case 5: case 7: case 9: case 10: case 11:
            if (f.type != 2 || data_fields++) return 0;
            m->kind = f.number;
            m->data = f.s;
            break;
        default: break;
        }
    }
    if (rc < 0) return 0;
    for (int i = 0; i < cfg.n_metric_names; i++)
        if (slice_eq(m->name, cfg.metric_names[i])) m->field = cfg.metric_fields[i];
    return 1;
}

static Slice str_value(const Value *v) {
    if (v->kind == K_STRING) return v->s;
    Slice empty = {(const uint8_t *)"", 0};
    return empty;
}

/* At most ``limit`` code points of a UTF-8 string (str(...)[:limit]). */
static Slice truncated(Slice s, Py_ssize_t limit) {
    Py_ssize_t chars = 0;
    for (Py_ssize_t i = 0; i < s.n; i++) {
        if ((s.p[i] & 0xC0) != 0x80 && chars++ == limit) {
            s.n = i;
            break;
        }
    }
    return s;
}

/* One data point of a handled HTTP histogram into its row. 0: leave the export to Python. */
static int convert_point(Pass *pass, const MetricInfo *m, const ExpPoint *pt, const Slice *source, Buckets *buckets) {
    const Attrs *a = &pt->attrs;
    /* Attributes the row takes must be strings (status an integer): others are left to Python. */
    static const int strings[] = {A_METHOD, A_OLD_METHOD, A_ROUTE, A_TARGET, A_CONSUMER, A_CONSUMER_NAME,
                                  A_CONSUMER_GROUP};
    for (size_t i = 0; i < sizeof(strings) / sizeof(strings[0]); i++)
        if (a->v[strings[i]].kind != K_NONE && a->v[strings[i]].kind != K_STRING) return 0;
    uint32_t minute = (uint32_t)((pt->time_ns - 1) / 60000000000ULL * 60);
    Slice consumer = truncated(str_value(&a->v[A_CONSUMER]), cfg.max_consumer_id);
    if (m->field == F_DURATION && slice_eq(m->name, cfg.duration_name) && consumer.n) {
        ConsumerSeen seen = {source[0], consumer, truncated(str_value(&a->v[A_CONSUMER_NAME]), cfg.max_consumer_name),
                             truncated(str_value(&a->v[A_CONSUMER_GROUP]), cfg.max_consumer_name), minute};
        if (!valid_utf8(seen.env) || !valid_utf8(seen.identifier) || !valid_utf8(seen.name) || !valid_utf8(seen.group))
            return 0; /* not UTF-8: left to Python, whose parser refuses the export */
        if (pass->n_consumers == pass->cap_consumers) {
            Py_ssize_t cap = pass->cap_consumers ? pass->cap_consumers * 2 : 64;
            ConsumerSeen *grown = realloc(pass->consumers, cap * sizeof(ConsumerSeen));
            if (!grown) return -1;
            pass->consumers = grown;
            pass->cap_consumers = cap;
        }
        pass->consumers[pass->n_consumers++] = seen;
    }
    if (!pt->count) return 1;
    Row key;
    memset(&key, 0, sizeof(key));
    key.minute = minute;
    key.env = source[0];
    key.service = source[1];
    key.instance = source[2];
    key.consumer = consumer;
    if (a->v[A_OVERFLOW].kind == K_BOOL && a->v[A_OVERFLOW].u) {
        key.method.p = (const uint8_t *)"";
        key.route = cfg.overflow_route;
        key.status = 0;
    } else {
        const Value *status = a->v[A_STATUS].kind != K_NONE ? &a->v[A_STATUS] : &a->v[A_OLD_STATUS];
        if (status->kind == K_INT || status->kind == K_BOOL) {
            key.status = (uint16_t)status->u; /* within 0..65535: checked with the point */
        } else if (status->kind != K_NONE) {
            return 0; /* as_int of a string, a float or a structure: Python's */
        }
        key.method = str_value(a->v[A_METHOD].kind != K_NONE ? &a->v[A_METHOD] : &a->v[A_OLD_METHOD]);
        if (a->v[A_ROUTE].kind != K_NONE) {
            key.route = a->v[A_ROUTE].s;
        } else {
            key.route = str_value(&a->v[A_TARGET]);
            const uint8_t *q = key.route.n ? memchr(key.route.p, '?', key.route.n) : NULL;
            if (q) key.route.n = q - key.route.p;
        }
    }
    Row *row = row_for(&pass->rows, &key);
    if (!row) return -1;
    if (row == &invalid_row) return 0;
    Buckets *into = &row->buckets[m->field];
    if (!into->n) { /* the row's first point of this metric (the usual case): its buckets, taken */
        Buckets empty = *into;
        *into = *buckets;
        *buckets = empty;
    } else if (!buckets_merge(into, buckets)) {
        return -1;
    }
    row->sums[m->field] += pt->has_sum ? pt->sum : 0.0;
    if (m->field == F_DURATION) {
        double low = pt->has_min ? pt->min : 0.0, high = pt->has_max ? pt->max : 0.0;
        if (row->requests == 0) {
            row->dmin = low;
            row->dmax = high;
        } else {
            if (low < row->dmin) row->dmin = low;
            if (high > row->dmax) row->dmax = high;
        }
        row->requests += pt->count;
    }
    return 1;
}

/* The points of one metric: checked, and converted when it is a handled HTTP histogram. */
static int metric_points(Pass *pass, MetricInfo *m, const Slice *source) {
    Reader r = reader_of(m->data);
    Field f;
    int rc;
    m->temporality = 0;
    /* temporality first: it decides whether the metric is handled */
    while ((rc = next_field(&r, &f)) > 0)
        if (f.number == 2 && f.type == 0 && (m->kind == 7 || m->kind == 9 || m->kind == 10)) m->temporality = f.u;
    if (rc < 0) return 0;
    int duration_unit = slice_eq(m->unit, cfg.seconds_units[0]) || slice_eq(m->unit, cfg.seconds_units[1]);
    m->handled = pass->converting && m->field >= 0 && m->kind == 10 && m->temporality == 1 &&
                 (m->field != F_DURATION || duration_unit);
    if (pass->converting && m->field >= 0 && !m->handled && (m->kind == 9 || m->kind == 10))
        return 0; /* the HTTP metrics in other forms (cumulative, explicit buckets, other units): Python's */
    int checked_sum = m->kind == 7 && slice_starts(m->name, cfg.checked_sum_prefix);
    r = reader_of(m->data);
    while ((rc = next_field(&r, &f)) > 0) {
        if (f.number != 1) continue;
        if (f.type != 2 || ++pass->points > cfg.max_points) return 0;
        if (!m->handled) {
            if (!other_point_ok(f.s, m->kind, checked_sum)) return 0;
            continue;
        }
        ExpPoint pt;
        if (!exp_point(f.s, &pt) || !point_ok(&pt.attrs, pt.time_ns) || pt.count > cfg.max_count) return 0;
        if (pt.scale < cfg.min_scale || pt.scale > cfg.max_scale) return 0;
        uint64_t total = pt.zero_count;
        if (total > cfg.max_count) return 0;
        if (pt.negative_seen && exp_buckets(pt.negative, pt.scale, &total, NULL) != 1) return 0;
        Buckets positive = {0};
        int done = pt.positive_seen ? exp_buckets(pt.positive, pt.scale, &total, pass->converting ? &positive : NULL) : 1;
        if (done == 1 && pass->converting) done = convert_point(pass, m, &pt, source, &positive);
        free(positive.index);
        free(positive.count);
        if (done != 1) return done;
    }
    return rc < 0 ? 0 : 1;
}

/* The whole export. 1: done; 0: leave it to Python; -1: out of memory. Touches no Python object:
   the callers run it without the GIL, so that the hub's other threads go on meanwhile. */
static int walk(Pass *pass, Slice payload) {
    Reader r = reader_of(payload);
    Field f;
    int rc;
    while ((rc = next_field(&r, &f)) > 0) {
        if (f.number != 1) continue;
        if (f.type != 2) return 0;
        pass->resources++;
        /* ResourceMetrics */
        Reader rm = reader_of(f.s);
        Field g;
        Slice resource = {NULL, 0}, rm_schema = {NULL, 0};
        int resources = 0;
        while ((rc = next_field(&rm, &g)) > 0) {
            if (g.number == 1) {
                if (g.type != 2 || resources++) return 0;
                resource.p = g.start;
                resource.n = rm.p - g.start;
            } else if (g.number == 3) {
                rm_schema.p = g.start;
                rm_schema.n = rm.p - g.start;
            }
        }
        if (rc < 0) return 0;
        /* its source: env, service, instance */
        Value res[N_RES];
        memset(res, 0, sizeof(res));
        if (resource.p) {
            Reader rr = {resource.p, resource.p + resource.n};
            next_field(&rr, &g); /* the Resource field itself */
            Reader attrs = reader_of(g.s);
            Field kv;
            while ((rc = next_field(&attrs, &kv)) > 0) {
                if (kv.number != 1) continue;
                Slice key;
                Value v;
                if (kv.type != 2 || key_value(kv.s, &key, &v) < 0) return 0;
                for (int i = 0; i < N_RES; i++)
                    if (slice_eq(key, cfg.res[i])) {
                        if (v.kind != K_NONE && v.kind != K_STRING) return 0;
                        if (v.kind != K_NONE) res[i] = v;
                    }
            }
            if (rc < 0) return 0;
        }
        Slice source[3] = {str_value(res[R_ENV].kind ? &res[R_ENV] : &res[R_OLD_ENV]), str_value(&res[R_SERVICE]),
                           str_value(&res[R_INSTANCE])};
        /* its scopes and metrics */
        Buf scopes = {0};
        rm = reader_of(f.s);
        while ((rc = next_field(&rm, &g)) > 0) {
            if (g.number != 2) continue;
            if (g.type != 2) goto refuse;
            Buf kept = {0};
            Reader sm = reader_of(g.s);
            Field h;
            int any = 0;
            while ((rc = next_field(&sm, &h)) > 0) {
                if (h.number == 1 || h.number == 3) { /* scope, schema_url: kept with residual metrics */
                    if (!buf_put(&kept, h.start, sm.p - h.start)) goto fail_kept;
                    continue;
                }
                if (h.number != 2) continue;
                MetricInfo m;
                if (h.type != 2 || !metric_info(h.s, &m)) goto refuse_kept;
                if (!m.kind) { /* no data: no points; Python skips it too */
                    continue;
                }
                int done = metric_points(pass, &m, source);
                if (done < 0) goto fail_kept;
                if (!done) goto refuse_kept;
                if (!m.handled) {
                    any = 1;
                    if (!buf_put(&kept, h.start, sm.p - h.start)) goto fail_kept;
                }
            }
            if (rc < 0) goto refuse_kept;
            if (any && pass->converting && !buf_message(&scopes, 2, &kept)) goto fail_kept;
            free(kept.p);
            continue;
        fail_kept:
            free(kept.p);
            goto fail;
        refuse_kept:
            free(kept.p);
            goto refuse;
        }
        if (rc < 0) goto refuse;
        if (scopes.n && pass->converting) {
            Buf message = {0};
            int ok = (!resource.p || buf_put(&message, resource.p, resource.n)) &&
                     (!rm_schema.p || buf_put(&message, rm_schema.p, rm_schema.n)) &&
                     buf_put(&message, scopes.p, scopes.n) && buf_message(&pass->residual, 1, &message);
            free(message.p);
            if (!ok) goto fail;
        }
        free(scopes.p);
        continue;
    refuse:
        free(scopes.p);
        return 0;
    fail:
        free(scopes.p);
        return -1;
    }
    return rc < 0 ? 0 : 1;
}

/* ---------------------------------------------------------------- RowBinary */

static int put_u16(Buf *b, uint16_t v) { return buf_put(b, &v, 2); }
static int put_u32(Buf *b, uint32_t v) { return buf_put(b, &v, 4); }
static int put_u64(Buf *b, uint64_t v) { return buf_put(b, &v, 8); }
static int put_f64(Buf *b, double v) { return buf_put(b, &v, 8); }

static int put_map(Buf *b, const Buckets *m) {
    if (!buf_varint(b, (uint64_t)m->n) || !buf_reserve(b, m->n * 12)) return 0;
    for (Py_ssize_t i = 0; i < m->n; i++) {
        memcpy(b->p + b->n, &m->index[i], 4);
        memcpy(b->p + b->n + 4, &m->count[i], 8);
        b->n += 12;
    }
    return 1;
}

/* The rows in `requests`' column order (storage.writer.REQUEST_COLUMNS). */
static int encode_rows(Buf *b, const Rows *rows, Slice app) {
    for (Py_ssize_t i = 0; i < rows->n; i++) {
        const Row *row = &rows->rows[i];
        if (!(put_u32(b, row->minute) && buf_string(b, app) && buf_string(b, row->env) &&
              buf_string(b, row->service) && buf_string(b, row->instance) && buf_string(b, row->consumer) &&
              buf_string(b, row->method) && buf_string(b, row->route) && put_u16(b, row->status) &&
              put_u64(b, row->requests) && put_f64(b, row->sums[F_DURATION]) && put_f64(b, row->dmin) &&
              put_f64(b, row->dmax) && put_map(b, &row->buckets[F_DURATION]) &&
              put_f64(b, row->sums[F_REQUEST_SIZE]) && put_map(b, &row->buckets[F_REQUEST_SIZE]) &&
              put_f64(b, row->sums[F_RESPONSE_SIZE]) && put_map(b, &row->buckets[F_RESPONSE_SIZE])))
            return 0;
    }
    return 1;
}

/* ---------------------------------------------------------------- validation

   Whether an encoded ExportMetricsServiceRequest is certainly one that protobuf's own parser
   (upb) takes: every known field with its declared wire type, every string valid UTF-8, every
   length within its message, nesting within bounds. Unknown fields are skipped, as upb skips
   them. Anything this does not judge for certain (a known field with another wire type, groups,
   deep nesting) is "not certain": the receiver then asks upb, whose answer and message stand. */

enum { V_VARINT, V_FIXED64, V_FIXED32, V_STRING, V_BYTES, V_MSG, V_REP_VARINT, V_REP_FIXED64 };
enum { M_REQUEST, M_RESOURCE_METRICS, M_RESOURCE, M_ENTITY_REF, M_SCOPE_METRICS, M_SCOPE, M_METRIC, M_GAUGE, M_SUM,
       M_HISTOGRAM, M_EXP_HISTOGRAM, M_SUMMARY, M_NUMBER_POINT, M_HISTOGRAM_POINT, M_EXP_POINT, M_BUCKETS,
       M_SUMMARY_POINT, M_QUANTILE, M_EXEMPLAR, M_KEY_VALUE, M_ANY_VALUE, M_ARRAY, M_KV_LIST, N_MESSAGES };

typedef struct {
    uint8_t number, kind, message;
} FieldSpec;

#define F(n, k) {n, k, 0}
#define M(n, m) {n, V_MSG, m}
static const FieldSpec SPEC_REQUEST[] = {M(1, M_RESOURCE_METRICS), {0}};
static const FieldSpec SPEC_RESOURCE_METRICS[] = {M(1, M_RESOURCE), M(2, M_SCOPE_METRICS), F(3, V_STRING), {0}};
static const FieldSpec SPEC_RESOURCE[] = {M(1, M_KEY_VALUE), F(2, V_VARINT), M(3, M_ENTITY_REF), {0}};
static const FieldSpec SPEC_ENTITY_REF[] = {F(1, V_STRING), F(2, V_STRING), F(3, V_STRING), F(4, V_STRING), {0}};
static const FieldSpec SPEC_SCOPE_METRICS[] = {M(1, M_SCOPE), M(2, M_METRIC), F(3, V_STRING), {0}};
static const FieldSpec SPEC_SCOPE[] = {F(1, V_STRING), F(2, V_STRING), M(3, M_KEY_VALUE), F(4, V_VARINT), {0}};
static const FieldSpec SPEC_METRIC[] = {F(1, V_STRING),       F(2, V_STRING),         F(3, V_STRING),
                                        M(5, M_GAUGE),        M(7, M_SUM),            M(9, M_HISTOGRAM),
                                        M(10, M_EXP_HISTOGRAM), M(11, M_SUMMARY),     M(12, M_KEY_VALUE), {0}};
static const FieldSpec SPEC_GAUGE[] = {M(1, M_NUMBER_POINT), {0}};
static const FieldSpec SPEC_SUM[] = {M(1, M_NUMBER_POINT), F(2, V_VARINT), F(3, V_VARINT), {0}};
static const FieldSpec SPEC_HISTOGRAM[] = {M(1, M_HISTOGRAM_POINT), F(2, V_VARINT), {0}};
static const FieldSpec SPEC_EXP_HISTOGRAM[] = {M(1, M_EXP_POINT), F(2, V_VARINT), {0}};
static const FieldSpec SPEC_SUMMARY[] = {M(1, M_SUMMARY_POINT), {0}};
static const FieldSpec SPEC_NUMBER_POINT[] = {M(7, M_KEY_VALUE), F(2, V_FIXED64), F(3, V_FIXED64), F(4, V_FIXED64),
                                              F(6, V_FIXED64),   M(5, M_EXEMPLAR), F(8, V_VARINT),  {0}};
static const FieldSpec SPEC_HISTOGRAM_POINT[] = {M(9, M_KEY_VALUE),      F(2, V_FIXED64),      F(3, V_FIXED64),
                                                 F(4, V_FIXED64),        F(5, V_FIXED64),      F(6, V_REP_FIXED64),
                                                 F(7, V_REP_FIXED64),    M(8, M_EXEMPLAR),     F(10, V_VARINT),
                                                 F(11, V_FIXED64),       F(12, V_FIXED64),     {0}};
static const FieldSpec SPEC_EXP_POINT[] = {M(1, M_KEY_VALUE), F(2, V_FIXED64),  F(3, V_FIXED64), F(4, V_FIXED64),
                                           F(5, V_FIXED64),   F(6, V_VARINT),   F(7, V_FIXED64), M(8, M_BUCKETS),
                                           M(9, M_BUCKETS),   F(10, V_VARINT),  M(11, M_EXEMPLAR), F(12, V_FIXED64),
                                           F(13, V_FIXED64),  F(14, V_FIXED64), {0}};
static const FieldSpec SPEC_BUCKETS[] = {F(1, V_VARINT), F(2, V_REP_VARINT), {0}};
static const FieldSpec SPEC_SUMMARY_POINT[] = {M(7, M_KEY_VALUE), F(2, V_FIXED64), F(3, V_FIXED64), F(4, V_FIXED64),
                                               F(5, V_FIXED64),   M(6, M_QUANTILE), F(8, V_VARINT),  {0}};
static const FieldSpec SPEC_QUANTILE[] = {F(1, V_FIXED64), F(2, V_FIXED64), {0}};
static const FieldSpec SPEC_EXEMPLAR[] = {M(7, M_KEY_VALUE), F(2, V_FIXED64), F(3, V_FIXED64),
                                          F(6, V_FIXED64),   F(4, V_BYTES),   F(5, V_BYTES),  {0}};
static const FieldSpec SPEC_KEY_VALUE[] = {F(1, V_STRING), M(2, M_ANY_VALUE), F(3, V_VARINT), {0}};
static const FieldSpec SPEC_ANY_VALUE[] = {F(1, V_STRING),     F(2, V_VARINT), F(3, V_VARINT), F(4, V_FIXED64),
                                           M(5, M_ARRAY),      M(6, M_KV_LIST), F(7, V_BYTES), F(8, V_VARINT), {0}};
static const FieldSpec SPEC_ARRAY[] = {M(1, M_ANY_VALUE), {0}};
static const FieldSpec SPEC_KV_LIST[] = {M(1, M_KEY_VALUE), {0}};
#undef F
#undef M

static const FieldSpec *const SPECS[N_MESSAGES] = {
    SPEC_REQUEST,       SPEC_RESOURCE_METRICS, SPEC_RESOURCE,        SPEC_ENTITY_REF,   SPEC_SCOPE_METRICS,
    SPEC_SCOPE,         SPEC_METRIC,           SPEC_GAUGE,           SPEC_SUM,          SPEC_HISTOGRAM,
    SPEC_EXP_HISTOGRAM, SPEC_SUMMARY,          SPEC_NUMBER_POINT,    SPEC_HISTOGRAM_POINT, SPEC_EXP_POINT,
    SPEC_BUCKETS,       SPEC_SUMMARY_POINT,    SPEC_QUANTILE,        SPEC_EXEMPLAR,     SPEC_KEY_VALUE,
    SPEC_ANY_VALUE,     SPEC_ARRAY,            SPEC_KV_LIST,
};

#define MAX_DEPTH 32 /* upb allows 100; deeper (attribute values nested in arrays) is left to it */

static int valid_message(Slice s, int message, int depth) {
    if (depth > MAX_DEPTH) return 0;
    Reader r = reader_of(s);
    Field f;
    int rc;
    while ((rc = next_field(&r, &f)) > 0) {
        const FieldSpec *spec = SPECS[message];
        while (spec->number && spec->number != f.number) spec++;
        if (!spec->number) continue; /* unknown: skipped (next_field refused groups) */
        switch (spec->kind) {
        case V_VARINT: if (f.type != 0) return 0; break;
        case V_FIXED64: if (f.type != 1) return 0; break;
        case V_FIXED32: if (f.type != 5) return 0; break;
        case V_BYTES: if (f.type != 2) return 0; break;
        case V_STRING: if (f.type != 2 || !valid_utf8(f.s)) return 0; break;
        case V_MSG: if (f.type != 2 || !valid_message(f.s, spec->message, depth + 1)) return 0; break;
        case V_REP_FIXED64:
            if (!(f.type == 1 || (f.type == 2 && f.s.n % 8 == 0))) return 0;
            break;
        case V_REP_VARINT:
            if (f.type == 2) { /* packed: varints of at most 9 bytes (longer ones are upb's to judge) */
                int run = 0;
                for (Py_ssize_t i = 0; i < f.s.n; i++) {
                    run = (f.s.p[i] & 0x80) ? run + 1 : 0;
                    if (run > 8) return 0;
                }
                if (run) return 0;
            } else if (f.type != 0) {
                return 0;
            }
            break;
        default:
            return 0;
        }
    }
    return rc == 0;
}

/* ---------------------------------------------------------------- Python functions */

static int need_config(void) {
    if (!cfg.ready) PyErr_SetString(PyExc_RuntimeError, "tallyhub.convert._otlp: configure() first");
    return cfg.ready;
}

static PyObject *scan(PyObject *self, PyObject *arg) {
    Py_buffer view;
    if (!need_config() || PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    Pass pass;
    memset(&pass, 0, sizeof(pass));
    Slice payload = {view.buf, view.len};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = valid_message(payload, M_REQUEST, 0) ? walk(&pass, payload) : 0;
    Py_END_ALLOW_THREADS
    rows_free(&pass.rows);
    free(pass.residual.p);
    free(pass.consumers);
    PyBuffer_Release(&view);
    if (rc < 0) return PyErr_NoMemory();
    if (rc == 0) Py_RETURN_NONE;
    return Py_BuildValue("(nL)", pass.resources, (long long)pass.points);
}

static PyObject *requests(PyObject *self, PyObject *args) {
    Py_buffer view;
    const char *app;
    Py_ssize_t app_n;
    if (!need_config() || !PyArg_ParseTuple(args, "y*s#", &view, &app, &app_n)) return NULL;
    Pass pass;
    memset(&pass, 0, sizeof(pass));
    pass.converting = view.buf;
    PyObject *result = NULL, *consumers = NULL;
    Buf block = {0};
    Slice payload = {view.buf, view.len}, app_slice = {(const uint8_t *)app, app_n};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = walk(&pass, payload);
    if (rc == 1 && !encode_rows(&block, &pass.rows, app_slice)) rc = -1;
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        PyErr_NoMemory();
        goto done;
    }
    if (rc == 0) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    consumers = PyList_New(pass.n_consumers);
    if (!consumers) goto done;
    for (Py_ssize_t i = 0; i < pass.n_consumers; i++) {
        const ConsumerSeen *c = &pass.consumers[i];
        PyObject *item = Py_BuildValue("(s#s#Is#s#)", (const char *)c->env.p, c->env.n, (const char *)c->identifier.p,
                                       c->identifier.n, c->minute, (const char *)c->name.p, c->name.n,
                                       (const char *)c->group.p, c->group.n);
        if (!item) goto done;
        PyList_SET_ITEM(consumers, i, item);
    }
    PyObject *residual = pass.residual.n ? PyBytes_FromStringAndSize((const char *)pass.residual.p, pass.residual.n)
                                         : Py_NewRef(Py_None);
    if (!residual) goto done;
    result = Py_BuildValue("(y#nON)", block.p ? (const char *)block.p : "", block.n, pass.rows.n, consumers, residual);
done:
    Py_XDECREF(consumers);
    rows_free(&pass.rows);
    free(pass.residual.p);
    free(pass.consumers);
    free(block.p);
    PyBuffer_Release(&view);
    return result;
}

static int config_slice(PyObject *keep, PyObject *value, Slice *out) {
    if (!PyUnicode_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "configure: names must be str");
        return 0;
    }
    if (PyList_Append(keep, value) < 0) return 0;
    Py_ssize_t n;
    const char *p = PyUnicode_AsUTF8AndSize(value, &n);
    if (!p) return 0;
    out->p = (const uint8_t *)p;
    out->n = n;
    return 1;
}

static int config_item(PyObject *kw, const char *name, PyObject *keep, Slice *out) {
    PyObject *value = PyDict_GetItemString(kw, name);
    if (!value) {
        PyErr_Format(PyExc_TypeError, "configure: missing %s", name);
        return 0;
    }
    return config_slice(keep, value, out);
}

static int config_int(PyObject *kw, const char *name, int64_t *out) {
    PyObject *value = PyDict_GetItemString(kw, name);
    if (!value) {
        PyErr_Format(PyExc_TypeError, "configure: missing %s", name);
        return 0;
    }
    *out = PyLong_AsLongLong(value);
    return !PyErr_Occurred();
}

static PyObject *configure(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *attr_names[N_ATTRS] = {"method", "old_method", "route", "target", "status", "old_status",
                                              "consumer_id", "consumer_name", "consumer_group", "overflow"};
    static const char *res_names[N_RES] = {"env", "old_env", "service", "instance"};
    if (!kw || PyTuple_GET_SIZE(args)) {
        PyErr_SetString(PyExc_TypeError, "configure takes keyword arguments only");
        return NULL;
    }
    PyObject *keep = PyList_New(0);
    if (!keep) return NULL;
    cfg.ready = 0;
    PyObject *fields = PyDict_GetItemString(kw, "metric_fields"); /* name -> 0, 1, 2 */
    if (!fields || !PyDict_Check(fields) || PyDict_Size(fields) > MAX_METRIC_NAMES) {
        PyErr_SetString(PyExc_TypeError, "configure: metric_fields must be a dict of at most 16 names");
        goto fail;
    }
    Py_ssize_t pos = 0;
    PyObject *name, *field;
    cfg.n_metric_names = 0;
    while (PyDict_Next(fields, &pos, &name, &field)) {
        long v = PyLong_AsLong(field);
        if (PyErr_Occurred() || v < 0 || v >= N_FIELDS) {
            PyErr_SetString(PyExc_ValueError, "configure: metric_fields values are 0, 1 or 2");
            goto fail;
        }
        if (!config_slice(keep, name, &cfg.metric_names[cfg.n_metric_names])) goto fail;
        cfg.metric_fields[cfg.n_metric_names++] = (int)v;
    }
    for (int i = 0; i < N_ATTRS; i++)
        if (!config_item(kw, attr_names[i], keep, &cfg.attrs[i])) goto fail;
    for (int i = 0; i < N_RES; i++)
        if (!config_item(kw, res_names[i], keep, &cfg.res[i])) goto fail;
    int64_t max_time, max_count, consumer_id, consumer_name;
    if (!config_item(kw, "duration", keep, &cfg.duration_name) ||
        !config_item(kw, "checked_sum_prefix", keep, &cfg.checked_sum_prefix) ||
        !config_item(kw, "overflow_route", keep, &cfg.overflow_route) ||
        !config_int(kw, "max_points", &cfg.max_points) || !config_int(kw, "max_attributes", &cfg.max_attributes) ||
        !config_int(kw, "max_time_ns", &max_time) || !config_int(kw, "max_count", &max_count) ||
        !config_int(kw, "storage_scale", &cfg.storage_scale) || !config_int(kw, "min_scale", &cfg.min_scale) ||
        !config_int(kw, "max_scale", &cfg.max_scale) ||
        !config_int(kw, "stored_index_low", &cfg.stored_index_low) ||
        !config_int(kw, "stored_index_high", &cfg.stored_index_high) ||
        !config_int(kw, "max_consumer_id", &consumer_id) || !config_int(kw, "max_consumer_name", &consumer_name))
        goto fail;
    cfg.max_time_ns = (uint64_t)max_time;
    cfg.max_count = (uint64_t)max_count;
    cfg.max_consumer_id = (Py_ssize_t)consumer_id;
    cfg.max_consumer_name = (Py_ssize_t)consumer_name;
    cfg.seconds_units[0].p = (const uint8_t *)"s";
    cfg.seconds_units[0].n = 1;
    cfg.seconds_units[1].p = (const uint8_t *)"";
    cfg.seconds_units[1].n = 0;
    Py_XSETREF(cfg.keep, keep);
    cfg.ready = 1;
    Py_RETURN_NONE;
fail:
    Py_DECREF(keep);
    return NULL;
}

static PyMethodDef methods[] = {
    {"configure", (PyCFunction)(void (*)(void))configure, METH_VARARGS | METH_KEYWORDS,
     "Set the wire names and limits (once, from tallyhub.convert.fast)."},
    {"scan", scan, METH_O,
     "(ResourceMetrics, data points) of an export that protobuf certainly parses and of which the hub refuses "
     "no point, else None."},
    {"requests", requests, METH_VARARGS,
     "(RowBinary block of `requests` rows, rows, consumers, residual export or None), or None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_otlp", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__otlp(void) {
    const uint16_t probe = 1;
    if (*(const uint8_t *)&probe != 1) {
        PyErr_SetString(PyExc_ImportError, "tallyhub.convert._otlp needs a little-endian machine");
        return NULL;
    }
    return PyModule_Create(&module);
}
