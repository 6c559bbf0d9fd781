/* A LETOR/SVMlight tokenizer: whole lines "label [qid:Q] index:value ... [# comment]" written
 * straight into the caller's label, qid and feature arrays, without the GIL.
 *
 * It reads only the forms it can read exactly as the general (Arrow) parser does: decimal
 * numbers ([+-]digits[.digits][e[+-]digits]), integer qids and indices. Anything else (a token
 * it does not know, a line without a label, qids on some lines only) makes it give up on the
 * block and return None; the Python side then parses the text the general way, which reads
 * what it can and names what is wrong. Values are rounded to float32 exactly once (the nearest
 * float32 to the decimal), as Arrow's float32 conversion does.
 *
 * Beside it, the data profile's pass over a parsed matrix (profile_block, engine/profile.py):
 * columns radix-sorted and read once for their counts, moments and distinct-count registers;
 * and the radix sort of a float64 column (sort_float64: a model's predictions) read by
 * profile_sorted.
 */
#define PY_SSIZE_T_CLEAN
#include <patchlevel.h>
#if !defined(Py_LIMITED_API) && PY_VERSION_HEX >= 0x030B0000
#define Py_LIMITED_API 0x030B0000 /* the stable ABI of 3.11 (buffers): one build for 3.11+ */
#endif
#include <Python.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define IRREGULAR (-1)

static const double POW10[] = {
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

static inline int is_space(char c) { return c == ' ' || c == '\t' || c == '\r'; }
static inline int is_digit(char c) { return (unsigned char)(c - '0') < 10; }

/* The token [p, end) as the C library reads it: the rare numbers the fast path below leaves. */
static int slow_float(const char *p, const char *end, float *out) {
    char buf[64];
    size_t n = (size_t)(end - p);
    if (n >= sizeof buf) return IRREGULAR;
    memcpy(buf, p, n);
    buf[n] = 0;
    char *last;
    errno = 0;
    float value = strtof(buf, &last);
    if (last != buf + n || errno == ERANGE || !isfinite(value)) return IRREGULAR;
    *out = value;
    return 0;
}

/* The decimal token at *pp (it ends at a space or stop) to the nearest float32; *pp moves past
 * it. The digits (at most 19 significant) and the decimal exponent (|e| <= 22) give a double
 * correctly rounded by one IEEE multiplication or division; rounding that double to float32
 * gives the nearest float32 too, unless the double lies exactly halfway between two float32s
 * (then the C library decides). */
static int parse_float(const char **pp, const char *stop, float *out) {
    const char *start = *pp, *p = start;
    int negative = 0;
    if (p < stop && (*p == '-' || *p == '+')) negative = *p++ == '-';
    uint64_t mantissa = 0;
    int digits = 0, scale = 0;
    const char *first = p;
    while (p < stop && *p == '0') p++;
    for (; p < stop && is_digit(*p); p++, digits++) mantissa = mantissa * 10 + (uint64_t)(*p - '0');
    int seen = p > first;
    if (p < stop && *p == '.') {
        const char *point = ++p;
        if (!digits) while (p < stop && *p == '0') p++;
        const char *fraction = p;
        for (; p < stop && is_digit(*p); p++) mantissa = mantissa * 10 + (uint64_t)(*p - '0');
        digits += (int)(p - fraction);
        scale = -(int)(p - point);
        seen |= p > point;
    }
    if (!seen) return IRREGULAR;
    if (p < stop && (*p == 'e' || *p == 'E')) {
        int exp_negative = 0, exponent = 0;
        p++;
        if (p < stop && (*p == '-' || *p == '+')) exp_negative = *p++ == '-';
        const char *exp_first = p;
        for (; p < stop && is_digit(*p); p++)
            if (exponent < 10000) exponent = exponent * 10 + (*p - '0');
        if (p == exp_first) return IRREGULAR;
        scale += exp_negative ? -exponent : exponent;
    }
    if (p < stop && !is_space(*p)) return IRREGULAR;
    *pp = p;
    if (digits > 19) return slow_float(start, p, out); /* the mantissa overflowed */
    if (mantissa == 0) {
        *out = negative ? -0.0f : 0.0f;
        return 0;
    }
    if (mantissa >> 53 || scale < -22 || scale > 22) return slow_float(start, p, out);
    double value = scale < 0 ? (double)mantissa / POW10[-scale] : (double)mantissa * POW10[scale];
    uint64_t bits;
    memcpy(&bits, &value, sizeof bits);
    /* float32 keeps 24 of the double's 53 significant bits: a double whose lower 29 bits are
     * exactly 1000...0 is a float32 midpoint. Outside float32's normal range: the C library. */
    if ((bits & 0x1FFFFFFFu) == 0x10000000u || value < 1.2e-38 || value > 3.4e38)
        return slow_float(start, p, out);
    *out = negative ? -(float)value : (float)value;
    return 0;
}

/* Unsigned decimal digits at *pp (at most 18) up to the first byte that is not one; *pp moves
 * past them. */
static inline int parse_digits(const char **pp, const char *stop, int64_t *out) {
    const char *p = *pp;
    int64_t value = 0;
    for (; p < stop && is_digit(*p); p++) value = value * 10 + (*p - '0');
    if (p == *pp || p - *pp > 18) return IRREGULAR;
    *pp = p;
    *out = value;
    return 0;
}

/* Eight bytes at p (readable) as digits: returns how many lead the bytes (0-8; 8: maybe more)
 * and sets *value to their number. Each byte b is a digit when b ^ '0' is below 10; adding 0x76
 * sets a byte's high bit from 10 up (a carry only reaches bytes after the first non-digit). The
 * digits are moved to the top of the word, so the ones missing read as leading zeros, and then
 * combined by pairs, fours and the whole (three multiplications, no loop). */
static inline int digits8(const char *p, uint64_t *value) {
    uint64_t word;
    memcpy(&word, p, 8);
    uint64_t x = word ^ 0x3030303030303030ULL;
    uint64_t over = ((x + 0x7676767676767676ULL) | x) & 0x8080808080808080ULL;
    int n = over ? __builtin_ctzll(over) >> 3 : 8;
    if (n == 0) {
        *value = 0;
        return 0;
    }
    uint64_t d = n == 8 ? x : (x & ((1ULL << (8 * n)) - 1)) << (8 * (8 - n));
    d = d * 10 + (d >> 8); /* even bytes: two-digit numbers */
    const uint64_t pairs = 0x000000FF000000FFULL;
    d = ((d & pairs) * (100 + (1000000ULL << 32)) + ((d >> 16) & pairs) * (1 + (10000ULL << 32))) >> 32;
    *value = d;
    return n;
}

static const uint64_t POW10_INT[] = {1, 10, 100, 1000, 10000, 100000, 1000000, 10000000};

/* The common feature token "index:digits[.digits]" (at most 7 digits each side) at *pp, with
 * at least 32 readable bytes: returns 1 and moves *pp past it, or 0 to leave it to the general
 * path (any other form). */
static inline int fast_pair(const char **pp, const char *stop, int64_t *index, float *value) {
    const char *p = *pp;
    uint64_t number, whole, fraction = 0;
    int n = digits8(p, &number);
    if (n == 0 || n == 8 || p[n] != ':' || number == 0) return 0;
    const char *q = p + n + 1;
    int n1 = digits8(q, &whole), n2 = 0;
    if (n1 == 8) return 0;
    const char *r = q + n1;
    if (*r == '.') {
        n2 = digits8(r + 1, &fraction);
        if (n2 == 8) return 0;
        r += 1 + n2;
    }
    if (!(n1 | n2) || (r < stop && !is_space(*r))) return 0;
    /* At most 14 digits and 7 decimals: the correctly rounded double can only be a float32
     * midpoint when the decimal is that midpoint exactly (a decimal that is not one differs from
     * every midpoint by more than 1e-15 relative, a double's half ulp being 1.1e-16), so one
     * more rounding to float32 gives the nearest float32 (the general path checks the rest). */
    uint64_t mantissa = whole * POW10_INT[n2] + fraction;
    *index = (int64_t)number;
    *value = (float)((double)mantissa / POW10[n2]);
    *pp = r;
    return 1;
}

typedef struct {
    float *labels;
    int64_t *qids;
    float *features;
    Py_ssize_t capacity; /* rows the arrays hold */
    Py_ssize_t width;    /* features per row */
    int has_qid;         /* -1: not known yet (no line read) */
    int64_t max_index;   /* the highest feature index seen, written or not */
    Py_ssize_t rows;
    Py_ssize_t used;     /* bytes of whole lines read (all, unless the rows ran out) */
} Output;

/* Parses whole lines of [p, end) until the rows run out. Returns 0, or IRREGULAR at the first
 * thing it does not read. A feature index beyond the width is not written; max_index says how
 * wide the rows must be. */
static int parse_lines(const char *p, const char *end, Output *o) {
    const float nan = NAN;
    const char *begin = p;
    while (p < end) {
        const char *line = p;
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol) eol = end;
        const char *hash = memchr(p, '#', (size_t)(eol - p));
        const char *stop = hash ? hash : eol;
        while (p < stop && is_space(*p)) p++;
        if (p == stop) { /* blank, or only a comment */
            p = eol + 1;
            continue;
        }
        if (o->rows >= o->capacity) { /* out of rows: the caller makes room and goes on here */
            o->used = line - begin;
            return 0;
        }
        float label;
        if (parse_float(&p, stop, &label)) return IRREGULAR;
        while (p < stop && is_space(*p)) p++;
        int line_qid = stop - p > 4 && memcmp(p, "qid:", 4) == 0;
        if (o->has_qid < 0) o->has_qid = line_qid;
        if (line_qid != o->has_qid) return IRREGULAR;
        if (line_qid) {
            p += 4;
            int negative = *p == '-';
            p += negative;
            int64_t qid;
            if (parse_digits(&p, stop, &qid) || (p < stop && !is_space(*p))) return IRREGULAR;
            o->qids[o->rows] = negative ? -qid : qid;
        }
        float *row = o->features + o->rows * o->width;
        for (Py_ssize_t i = 0; i < o->width; i++) row[i] = nan;
        for (;;) {
            while (p < stop && is_space(*p)) p++;
            if (p == stop) break;
            int64_t index;
            float value;
            if (stop - p < 32 || !fast_pair(&p, stop, &index, &value)) {
                if (parse_digits(&p, stop, &index) || p == stop || *p != ':' || index < 1)
                    return IRREGULAR;
                p++;
                if (parse_float(&p, stop, &value)) return IRREGULAR;
            }
            if (index > o->max_index) o->max_index = index;
            if (index <= o->width) row[index - 1] = value;
        }
        o->labels[o->rows++] = label;
        p = eol + 1;
    }
    o->used = end - begin;
    return 0;
}

/* Views of count objects, each C-contiguous: the first `reading` to read, the others to write,
 * of itemsize[i] bytes an item (0: any). Returns 0, or -1 with an exception set and nothing
 * held. */
static int acquire(PyObject *const *objects, Py_buffer *views, int count, int reading,
                   const Py_ssize_t *itemsize, const char *const *names) {
    for (int i = 0; i < count; i++) {
        int flags = PyBUF_C_CONTIGUOUS | (i >= reading ? PyBUF_WRITABLE : 0);
        int failed = PyObject_GetBuffer(objects[i], &views[i], flags) < 0;
        if (!failed && itemsize[i] && views[i].itemsize != itemsize[i]) {
            PyErr_Format(PyExc_TypeError, "%s: items of %zd bytes expected", names[i],
                         itemsize[i]);
            PyBuffer_Release(&views[i]);
            failed = 1;
        }
        if (failed) {
            while (i--) PyBuffer_Release(&views[i]);
            return -1;
        }
    }
    return 0;
}

static void release(Py_buffer *views, int count) {
    while (count--) PyBuffer_Release(&views[count]);
}

PyDoc_STRVAR(parse_doc,
"parse(text, labels, qids, features, width, has_qid) -> (rows, has_qid, max_index, used)\n"
"or None\n\n"
"Parses the whole LETOR lines of ``text`` into ``labels`` (float32), ``qids`` (int64) and\n"
"``features`` (float32, ``width`` per row, NaN where a line names no value), from their first\n"
"row, until the text or the rows run out: ``used`` is the bytes of lines read. ``has_qid`` is\n"
"-1 before any line is known, else whether lines carry ``qid:``. Returns None where the text\n"
"is not read exactly the fast way (the caller parses it the general way). Feature indices\n"
"above ``width`` are not written; ``max_index`` is the highest index seen.");

static PyObject *parse(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *text_object, *labels_object, *qids_object, *features_object;
    Py_ssize_t width;
    int has_qid;
    if (!PyArg_ParseTuple(args, "OOOOni", &text_object, &labels_object, &qids_object,
                          &features_object, &width, &has_qid))
        return NULL;
    if (width < 0) {
        PyErr_SetString(PyExc_ValueError, "width < 0");
        return NULL;
    }
    PyObject *objects[] = {text_object, labels_object, qids_object, features_object};
    static const Py_ssize_t itemsize[] = {0, 4, 8, 4};
    static const char *const names[] = {"text", "labels", "qids", "features"};
    Py_buffer views[4];
    if (acquire(objects, views, 4, 1, itemsize, names) < 0) return NULL;
    Py_buffer *text = &views[0], *labels = &views[1], *qids = &views[2], *features = &views[3];
    Output o = {labels->buf, qids->buf, features->buf, labels->len / 4, width, has_qid, 0, 0, 0};
    if (qids->len / 8 < o.capacity) o.capacity = qids->len / 8;
    if (width && features->len / 4 / width < o.capacity) o.capacity = features->len / 4 / width;
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = parse_lines(text->buf, (const char *)text->buf + text->len, &o);
    Py_END_ALLOW_THREADS
    release(views, 4);
    if (status) Py_RETURN_NONE;
    return Py_BuildValue("(niLn)", o.rows, o.has_qid, (long long)o.max_index, o.used);
}

/* ---- MurmurHash3 as DataSketches hashes an integer (the data profile's HLL registers) ---- */

static inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static inline uint64_t fmix64(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    k ^= k >> 33;
    return k;
}

/* MurmurHash3_x64_128 of an 8-byte little-endian key (all tail), as DataSketches hashes an
 * integer update: both halves. */
static inline void murmur3_key(int64_t key, uint64_t seed, uint64_t *first, uint64_t *second) {
    uint64_t word = rotl64((uint64_t)key * 0x87c37b91114253d5ULL, 31) * 0x4cf5ad432745937fULL;
    uint64_t h1 = seed ^ word ^ 8, h2 = seed ^ 8;
    h1 += h2;
    h2 += h1;
    h1 = fmix64(h1);
    h2 = fmix64(h2);
    h1 += h2;
    h2 += h1;
    *first = h1;
    *second = h2;
}

/* ---- A block of columns' profile: sorted by radix, read off in one pass (engine/profile.py) ---- */

#define HASH_CHUNK 256
#if defined(__GNUC__) && __GNUC__ >= 11 && !defined(__clang__) && defined(__x86_64__) && \
    defined(__linux__) && defined(__GLIBC__)
/* a copy of a loop for CPUs with AVX-512 (eight 64-bit products or doubles at once), chosen
 * when the module is loaded */
#define VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "default")))
#else
#define VECTOR_CLONES
#endif

#define NAN_KEY 0xFFFFFFFFu
#define TILE_ROWS 16
#define PREFETCH_ROWS 32

/* A float32's bits as an unsigned key in the order numpy sorts (every NaN last, as one key;
 * -0.0 read as 0.0, so the two are one value), and back. */
static inline uint32_t order_key(uint32_t bits) {
    if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return NAN_KEY;
    if (bits == 0x80000000u) bits = 0;
    return (bits & 0x80000000u) ? ~bits : bits | 0x80000000u;
}

static inline uint32_t key_bits(uint32_t key) {
    return (key & 0x80000000u) ? key & 0x7FFFFFFFu : ~key;
}

/* float32 bits as the float (memcpy: the bits are stored as integers) */
static inline float bits_float(uint32_t bits) {
    float value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

#define RADIX_BITS 11 /* a radix digit's bits */

/* The scatter passes of an LSD radix sort of the n keys (of type) at src: for each of the
 * passes digits named by runs (RADIX_BITS each, from the lowest), its counts turned into where
 * its keys start, the keys moved between src and scratch, the last pass writing back(key);
 * src is left at the result (the keys' buffer or scratch). */
#define RADIX_SCATTER(type, src, scratch, n, counts, runs, passes, back)                        \
    do {                                                                                        \
        type *dst_ = (scratch);                                                                 \
        for (int step_ = 0; step_ < (passes); step_++) {                                        \
            uint32_t *count_ = (counts)[(runs)[step_]], total_ = 0;                             \
            const int by_ = (runs)[step_] * RADIX_BITS, last_ = step_ == (passes) - 1;          \
            for (uint32_t digit_ = 0; digit_ < (1u << RADIX_BITS); digit_++) {                  \
                uint32_t here_ = count_[digit_];                                                \
                count_[digit_] = total_;                                                        \
                total_ += here_;                                                                \
            }                                                                                   \
            /* the compiler makes a loop of each case of last_ */                               \
            for (Py_ssize_t i_ = 0; i_ < (n); i_++) {                                           \
                type key_ = (src)[i_];                                                          \
                dst_[count_[(key_ >> by_) & ((1u << RADIX_BITS) - 1)]++] =                      \
                    last_ ? back(key_) : key_;                                                  \
            }                                                                                   \
            type *swap_ = (src);                                                                \
            (src) = dst_;                                                                       \
            dst_ = swap_;                                                                       \
        }                                                                                       \
    } while (0)

/* A column's n keys (order_key) sorted into its ascending float32 bits, in place, by LSD radix:
 * RADIX_PASSES digits of RADIX_BITS from the lowest, a pass skipped where every key has the
 * same digit, the last pass writing each key's bits (key_bits); scratch: room for n more
 * (n < 2**32).
 * tally: the keys that are NaN, -inf and +inf, read off the top digit's counts: where the top
 * digit has at least 10 bits, each of the three keys is alone in its digit (the other keys
 * of those digits would be NaNs', and every NaN has NAN_KEY). */
#define RADIX_PASSES 3
#define TOP_SHIFT (RADIX_BITS * (RADIX_PASSES - 1))
_Static_assert(32 - TOP_SHIFT >= 10 && RADIX_BITS * RADIX_PASSES >= 32, "radix digits");
static void sort_keys(uint32_t *keys, uint32_t *scratch, Py_ssize_t n, Py_ssize_t tally[3]) {
    const uint32_t digits = (1u << RADIX_BITS) - 1;
    uint32_t counts[RADIX_PASSES][1 << RADIX_BITS];
    memset(counts, 0, sizeof counts);
    for (Py_ssize_t i = 0; i < n; i++) {
        uint32_t key = keys[i];
        for (int pass = 0; pass < RADIX_PASSES; pass++)
            counts[pass][(key >> (pass * RADIX_BITS)) & digits]++;
    }
    tally[0] = counts[RADIX_PASSES - 1][NAN_KEY >> TOP_SHIFT];
    tally[1] = counts[RADIX_PASSES - 1][order_key(0xFF800000u) >> TOP_SHIFT];
    tally[2] = counts[RADIX_PASSES - 1][order_key(0x7F800000u) >> TOP_SHIFT];
    int runs[RADIX_PASSES], passes = 0; /* the passes whose digit the keys do not all share */
    for (int pass = 0; n && pass < RADIX_PASSES; pass++)
        if (counts[pass][(keys[0] >> (pass * RADIX_BITS)) & digits] != (uint32_t)n)
            runs[passes++] = pass;
    if (!passes) {
        for (Py_ssize_t i = 0; i < n; i++) keys[i] = key_bits(keys[i]);
        return;
    }
    /* from keys to scratch and back, the last pass's result copied into keys if it is not */
    uint32_t *src = keys;
    RADIX_SCATTER(uint32_t, src, scratch, n, counts, runs, passes, key_bits);
    if (src != keys) memcpy(keys, src, (size_t)n * sizeof *keys);
}

enum { ST_MISSING, ST_NEG_INF, ST_POS_INF, ST_ZEROS, ST_COUNT, ST_MIN, ST_MAX, ST_MEAN, ST_M2,
       ST_DISTINCT, ST_FIELDS };

/* The sum of x[i] (squares: of (x[i] - shift)^2) over the n floats whose bits are at x, in
 * float64: LANES partial sums side by side (vectors where the compiler has them), then added
 * up. */
#define LANES 8
#if defined(__GNUC__)
typedef float float_lanes __attribute__((vector_size(LANES * sizeof(float))));
typedef double double_lanes __attribute__((vector_size(LANES * sizeof(double))));

VECTOR_CLONES static double float_sum(const uint32_t *x, Py_ssize_t n, double shift,
                                      int squares) {
    double_lanes part = {0}, by = part + shift;
    Py_ssize_t i = 0;
    for (; i + LANES <= n; i += LANES) {
        float_lanes some;
        memcpy(&some, x + i, sizeof some);
        double_lanes value = __builtin_convertvector(some, double_lanes) - by;
        part += squares ? value * value : value;
    }
    double total = 0.0;
    for (int lane = 0; lane < LANES; lane++) total += part[lane];
    for (; i < n; i++) {
        double value = (double)bits_float(x[i]) - shift;
        total += squares ? value * value : value;
    }
    return total;
}
#else
static double float_sum(const uint32_t *x, Py_ssize_t n, double shift, int squares) {
    double total = 0.0;
    for (Py_ssize_t i = 0; i < n; i++) {
        double value = (double)bits_float(x[i]) - shift;
        total += squares ? value * value : value;
    }
    return total;
}
#endif

/* Each of the ascending float32 bits[0 .. n-1] (as a signed integer key) hashed as
 * DataSketches hashes an integer: its register (the first half's bits under mask) and its run
 * (leading zeros of the second half plus one, at most 63), 0 where it repeats the value before
 * it (bits[-1] is read: the caller's value before them); returns how many do not. A loop
 * without branches, so the compiler can vectorise it. */
VECTOR_CLONES static Py_ssize_t hash_chunk(const uint32_t *bits, Py_ssize_t n, uint64_t seed,
                                           uint32_t mask, uint32_t *slot, uint8_t *run) {
    Py_ssize_t fresh = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t first, second;
        murmur3_key((int64_t)(int32_t)bits[i], seed, &first, &second);
        slot[i] = (uint32_t)first & mask;
        int lead = (int)__builtin_clzll(second | 1); /* 63 for 0 and 1: the cap */
        int repeat = bits[i] == bits[i - 1];
        run[i] = (uint8_t)(repeat ? 0 : (lead > 62 ? 62 : lead) + 1);
        fresh += !repeat;
    }
    return fresh;
}

/* The HLL registers raised by the n ascending finite float32 bits (each a signed integer key):
 * every value hashed (a repeat with run 0: the first value's is never), the registers raised
 * without a branch. Returns the number of distinct values. */
static Py_ssize_t raise_registers(const uint32_t *bits, Py_ssize_t n, uint8_t *rho,
                                  Py_ssize_t slots, uint64_t seed) {
    uint32_t slot[HASH_CHUNK];
    uint8_t run[HASH_CHUNK];
    Py_ssize_t distinct = 0;
    for (Py_ssize_t done = 0; done < n; done += HASH_CHUNK) {
        Py_ssize_t chunk = n - done < HASH_CHUNK ? n - done : HASH_CHUNK, skip = done == 0;
        distinct += skip + hash_chunk(bits + done + skip, chunk - skip, seed,
                                      (uint32_t)(slots - 1), slot + skip, run + skip);
        if (skip) {
            uint64_t hash_first, hash_second;
            murmur3_key((int64_t)(int32_t)bits[0], seed, &hash_first, &hash_second);
            int lead = (int)__builtin_clzll(hash_second | 1);
            slot[0] = (uint32_t)hash_first & (uint32_t)(slots - 1);
            run[0] = (uint8_t)((lead > 62 ? 62 : lead) + 1);
        }
        for (Py_ssize_t i = 0; i < chunk; i++) {
            uint8_t held = rho[slot[i]];
            rho[slot[i]] = run[i] > held ? run[i] : held;
        }
    }
    return distinct;
}

static void put_stats(double *stats, Py_ssize_t missing, Py_ssize_t low, Py_ssize_t high,
                      Py_ssize_t zeros, Py_ssize_t count, double min, double max, double mean,
                      double m2, Py_ssize_t distinct) {
    stats[ST_MISSING] = (double)missing;
    stats[ST_NEG_INF] = (double)low;
    stats[ST_POS_INF] = (double)high;
    stats[ST_ZEROS] = (double)zeros;
    stats[ST_COUNT] = (double)count;
    stats[ST_MIN] = count ? min : INFINITY;
    stats[ST_MAX] = count ? max : -INFINITY;
    stats[ST_MEAN] = mean;
    stats[ST_M2] = m2;
    stats[ST_DISTINCT] = (double)distinct;
}

/* Where the first of the n ascending float32 bits is at least (above: more than) value. */
static Py_ssize_t float_bound(const uint32_t *bits, Py_ssize_t n, float value, int above) {
    Py_ssize_t low = 0, high = n;
    while (low < high) {
        Py_ssize_t middle = low + (high - low) / 2;
        float here = bits_float(bits[middle]);
        if (above ? here <= value : here < value) low = middle + 1;
        else high = middle;
    }
    return low;
}

/* One column's keys (n, order_key) sorted into its ascending float32 values in place, its
 * statistics and its finite values' HLL registers (profile_block's doc). */
static void profile_column(uint32_t *keys, uint32_t *scratch, Py_ssize_t n, uint8_t *rho,
                           Py_ssize_t slots, uint64_t seed, double *stats) {
    Py_ssize_t tally[3];
    sort_keys(keys, scratch, n, tally);
    Py_ssize_t missing = tally[0], low = tally[1], high = tally[2];
    Py_ssize_t first = low, last = n - missing - high, count = last - first;
    Py_ssize_t zeros = float_bound(keys + first, count, 0.0f, 1) -
                       float_bound(keys + first, count, 0.0f, 0);
    double mean = count ? float_sum(keys + first, count, 0.0, 0) / (double)count : 0.0;
    double m2 = float_sum(keys + first, count, mean, 1);
    Py_ssize_t distinct = raise_registers(keys + first, count, rho, slots, seed);
    put_stats(stats, missing, low, high, zeros, count, count ? bits_float(keys[first]) : 0.0,
              count ? bits_float(keys[last - 1]) : 0.0, mean, m2, distinct);
}

/* The sum of x[i] (squares: of (x[i] - shift)^2) over n doubles, LANES partial sums. */
VECTOR_CLONES static double double_sum(const double *x, Py_ssize_t n, double shift, int squares) {
    double part[LANES] = {0};
    Py_ssize_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int lane = 0; lane < LANES; lane++) {
            double value = x[i + lane] - shift;
            part[lane] += squares ? value * value : value;
        }
    double total = 0.0;
    for (int lane = 0; lane < LANES; lane++) total += part[lane];
    for (; i < n; i++) {
        double value = x[i] - shift;
        total += squares ? value * value : value;
    }
    return total;
}

PyDoc_STRVAR(profile_sorted_doc,
"profile_sorted(values, scratch, rho, stats, seed) -> None\n\n"
"profile_block's statistics and registers of one float64 column already in ascending order\n"
"(numpy's: NaN last): the moments over its float64 values, the registers and the distinct\n"
"count over their float32 roundings (-0.0 as 0.0), as the profile keys every column.\n"
"``scratch``: uint32, as many as the values; ``rho``: 2**k; ``stats``: 10.");

static PyObject *profile_sorted(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *values_object, *scratch_object, *rho_object, *stats_object;
    unsigned long long seed;
    if (!PyArg_ParseTuple(args, "OOOOK", &values_object, &scratch_object, &rho_object,
                          &stats_object, &seed))
        return NULL;
    PyObject *objects[] = {values_object, scratch_object, rho_object, stats_object};
    static const Py_ssize_t itemsize[] = {8, 4, 1, 8};
    static const char *const names[] = {"values", "scratch", "rho", "stats"};
    Py_buffer views[4];
    if (acquire(objects, views, 4, 1, itemsize, names) < 0) return NULL;
    Py_ssize_t n = views[0].len / 8, slots = views[2].len;
    if (views[1].len / 4 != n || views[3].len != ST_FIELDS * 8 || slots == 0 ||
        (slots & (slots - 1))) {
        PyErr_SetString(PyExc_ValueError, "profile_sorted: float64 values, scratch as many, "
                                          "rho a power of two, stats 10");
        release(views, 4);
        return NULL;
    }
    const double *x = views[0].buf;
    uint32_t *bits = views[1].buf;
    uint8_t *rho = views[2].buf;
    Py_BEGIN_ALLOW_THREADS
    Py_ssize_t last = n, low = 0, high = 0, zeros = 0;
    while (last > 0 && isnan(x[last - 1])) last--;
    Py_ssize_t missing = n - last;
    while (low < last && x[low] == -INFINITY) low++;
    while (last > low && x[last - 1] == INFINITY) last--, high++;
    Py_ssize_t count = last - low;
    double mean = count ? double_sum(x + low, count, 0.0, 0) / (double)count : 0.0;
    double m2 = double_sum(x + low, count, mean, 1);
    for (Py_ssize_t i = 0; i < count; i++) {
        float rounded = (float)x[low + i] + 0.0f;
        memcpy(bits + i, &rounded, 4);
        zeros += x[low + i] == 0.0;
    }
    memset(rho, 0, (size_t)slots);
    Py_ssize_t distinct = raise_registers(bits, count, rho, slots, seed);
    put_stats(views[3].buf, missing, low, high, zeros, count, count ? x[low] : 0.0,
              count ? x[last - 1] : 0.0, mean, m2, distinct);
    Py_END_ALLOW_THREADS
    release(views, 4);
    Py_RETURN_NONE;
}

/* float64 bits as an unsigned key in the order numpy sorts (every NaN last, as one key; -0.0
 * just before 0.0: they are equal), and back (a NaN as the quiet NaN). */
#define NAN_KEY64 UINT64_MAX
#define SIGN64 (1ull << 63)
static inline uint64_t order_key64(uint64_t bits) {
    if ((bits & ~SIGN64) > 0x7FF0000000000000ull) return NAN_KEY64;
    return (bits & SIGN64) ? ~bits : bits | SIGN64;
}

static inline uint64_t key_bits64(uint64_t key) {
    if (key == NAN_KEY64) return 0x7FF8000000000000ull;
    return (key & SIGN64) ? key & ~SIGN64 : ~key;
}

/* The n float64 values whose bits are at values sorted ascending in place, by LSD radix as
 * sort_keys sorts (RADIX_BITS a digit from the lowest, a digit every key shares skipped, the
 * last pass writing the values back); scratch: room for n more. -1 where there is no memory
 * for the digits' counts (nothing is changed), else 0. */
#define RADIX_PASSES64 ((64 + RADIX_BITS - 1) / RADIX_BITS)
static int sort_doubles(uint64_t *values, uint64_t *scratch, Py_ssize_t n) {
    const uint64_t digits = (1u << RADIX_BITS) - 1;
    uint32_t (*counts)[1 << RADIX_BITS] = calloc(RADIX_PASSES64, sizeof *counts);
    if (!counts) return -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t key = values[i] = order_key64(values[i]);
        for (int pass = 0; pass < RADIX_PASSES64; pass++)
            counts[pass][(key >> (pass * RADIX_BITS)) & digits]++;
    }
    int runs[RADIX_PASSES64], passes = 0; /* the passes whose digit the keys do not all share */
    for (int pass = 0; n && pass < RADIX_PASSES64; pass++)
        if (counts[pass][(values[0] >> (pass * RADIX_BITS)) & digits] != (uint32_t)n)
            runs[passes++] = pass;
    uint64_t *src = values;
    RADIX_SCATTER(uint64_t, src, scratch, n, counts, runs, passes, key_bits64);
    if (!passes) /* every key the same */
        for (Py_ssize_t i = 0; i < n; i++) values[i] = key_bits64(values[i]);
    else if (src != values)
        memcpy(values, src, (size_t)n * sizeof *values);
    free(counts);
    return 0;
}

PyDoc_STRVAR(sort_float64_doc,
"sort_float64(values, scratch) -> None\n\n"
"Sorts ``values`` (float64, C order) in place as numpy sorts them (NaN last, each as the quiet\n"
"NaN), by radix; ``scratch``: 8-byte items, at least as many.");

static PyObject *sort_float64(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *values_object, *scratch_object;
    if (!PyArg_ParseTuple(args, "OO", &values_object, &scratch_object)) return NULL;
    PyObject *objects[] = {values_object, scratch_object};
    static const Py_ssize_t itemsize[] = {8, 8};
    static const char *const names[] = {"values", "scratch"};
    Py_buffer views[2];
    if (acquire(objects, views, 2, 0, itemsize, names) < 0) return NULL;
    Py_ssize_t n = views[0].len / 8;
    if (views[1].len / 8 < n || n > (Py_ssize_t)UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "sort_float64: scratch as many as the values (< 2**32)");
        release(views, 2);
        return NULL;
    }
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = sort_doubles(views[0].buf, views[1].buf, n);
    Py_END_ALLOW_THREADS
    release(views, 2);
    if (status) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

#if defined(__SSE2__)
#include <emmintrin.h>
/* order_key of four bits at once */
static inline __m128i order_keys4(__m128i bits) {
    __m128i nan = _mm_cmpgt_epi32(_mm_and_si128(bits, _mm_set1_epi32(0x7FFFFFFF)),
                                  _mm_set1_epi32(0x7F800000));
    bits = _mm_andnot_si128(_mm_cmpeq_epi32(bits, _mm_set1_epi32((int)0x80000000u)), bits);
    __m128i flip = _mm_or_si128(_mm_srai_epi32(bits, 31), _mm_set1_epi32((int)0x80000000u));
    return _mm_or_si128(_mm_xor_si128(bits, flip), nan);
}
#endif

/* The columns start .. start + width - 1 of the rows x columns matrix as keys (order_key),
 * column after column into out (width x rows): a tile of rows at a time (they stay in the
 * cache while they are spread over the columns), where SSE2 is, four rows by four columns
 * transposed in registers. */
static void transposed_keys(const uint32_t *matrix, Py_ssize_t columns, Py_ssize_t start,
                            Py_ssize_t width, Py_ssize_t rows, uint32_t *out) {
    for (Py_ssize_t top = 0; top < rows; top += TILE_ROWS) {
        Py_ssize_t bottom = top + TILE_ROWS < rows ? top + TILE_ROWS : rows, c = 0;
        /* the rows PREFETCH_ROWS ahead asked for now: the CPU does not guess a stride of a
         * whole row (read in this order, the matrix waited on memory about 4 ns a value) */
        for (Py_ssize_t r = top + PREFETCH_ROWS; r < bottom + PREFETCH_ROWS && r < rows; r++) {
            __builtin_prefetch(matrix + r * columns + start);
            __builtin_prefetch(matrix + r * columns + start + width - 1);
        }
#if defined(__SSE2__)
        Py_ssize_t square = top + (bottom - top) / 4 * 4;
        for (; c + 4 <= width; c += 4) {
            for (Py_ssize_t r = top; r < square; r += 4) {
                const uint32_t *cell = matrix + r * columns + start + c;
                __m128i a = order_keys4(_mm_loadu_si128((const __m128i *)cell));
                __m128i b = order_keys4(_mm_loadu_si128((const __m128i *)(cell + columns)));
                __m128i d = order_keys4(_mm_loadu_si128((const __m128i *)(cell + 2 * columns)));
                __m128i e = order_keys4(_mm_loadu_si128((const __m128i *)(cell + 3 * columns)));
                __m128i ab_low = _mm_unpacklo_epi32(a, b), ab_high = _mm_unpackhi_epi32(a, b);
                __m128i de_low = _mm_unpacklo_epi32(d, e), de_high = _mm_unpackhi_epi32(d, e);
                uint32_t *column = out + c * rows + r;
                _mm_storeu_si128((__m128i *)column, _mm_unpacklo_epi64(ab_low, de_low));
                _mm_storeu_si128((__m128i *)(column + rows), _mm_unpackhi_epi64(ab_low, de_low));
                _mm_storeu_si128((__m128i *)(column + 2 * rows),
                                 _mm_unpacklo_epi64(ab_high, de_high));
                _mm_storeu_si128((__m128i *)(column + 3 * rows),
                                 _mm_unpackhi_epi64(ab_high, de_high));
            }
            for (Py_ssize_t k = c; k < c + 4; k++)
                for (Py_ssize_t r = square; r < bottom; r++)
                    out[k * rows + r] = order_key(matrix[r * columns + start + k]);
        }
#endif
        for (; c < width; c++) {
            uint32_t *column = out + c * rows;
            const uint32_t *cell = matrix + top * columns + start + c;
            for (Py_ssize_t r = top; r < bottom; r++, cell += columns)
                column[r] = order_key(*cell);
        }
    }
}

PyDoc_STRVAR(profile_block_doc,
"profile_block(features, columns, start, out, scratch, rho, stats, seed) -> None\n\n"
"For the columns start .. start + w - 1 of ``features`` (float32, rows x ``columns``, C\n"
"order), where ``out`` (float32) holds w x rows: each column's values in ascending order\n"
"(numpy's: NaN last; -0.0 as 0.0) into its row of ``out``; its statistics into its row of\n"
"``stats`` (float64, w x 10: missing, -inf, +inf, zeros, finite count, min, max, mean and the\n"
"sum of squared deviations from it (over the finite values, in float64), distinct finite\n"
"values); its finite values' HLL registers into its row of ``rho`` (uint8, w x 2**k: the\n"
"largest leading-zero count plus one, at most 63, of the second half of the MurmurHash3 of\n"
"the keys whose first half's low k bits name the register, each key a value's float32 bits\n"
"as an int64, hashed as DataSketches hashes an integer with ``seed``). ``scratch``: uint32,\n"
"rows of them.");

static PyObject *profile_block(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *features_object, *out_object, *scratch_object, *rho_object, *stats_object;
    Py_ssize_t start, columns;
    unsigned long long seed;
    if (!PyArg_ParseTuple(args, "OnnOOOOK", &features_object, &columns, &start, &out_object,
                          &scratch_object, &rho_object, &stats_object, &seed))
        return NULL;
    PyObject *objects[] = {features_object, out_object, scratch_object, rho_object,
                           stats_object};
    static const Py_ssize_t itemsize[] = {4, 4, 4, 1, 8};
    static const char *const names[] = {"features", "out", "scratch", "rho", "stats"};
    Py_buffer views[5];
    if (acquire(objects, views, 5, 1, itemsize, names) < 0) return NULL;
    Py_buffer *features = &views[0], *out = &views[1], *rho = &views[3], *stats = &views[4];
    Py_ssize_t rows = views[2].len / 4, width = stats->len / 8 / ST_FIELDS;
    Py_ssize_t slots = width ? rho->len / width : 0;
    if (columns <= 0 || rows > (Py_ssize_t)UINT32_MAX || features->len / 4 != rows * columns ||
        start < 0 || start + width > columns || out->len / 4 != rows * width ||
        stats->len != width * ST_FIELDS * 8 ||
        (width && (slots == 0 || (slots & (slots - 1)) || rho->len != slots * width))) {
        PyErr_SetString(PyExc_ValueError,
                        "profile_block: features rows x columns, and out, scratch, rho and stats "
                        "sized for the block");
        release(views, 5);
        return NULL;
    }
    const uint32_t *matrix = features->buf;
    uint32_t *sorted_keys = out->buf, *spare = views[2].buf;
    Py_BEGIN_ALLOW_THREADS
    memset(rho->buf, 0, (size_t)rho->len);
    transposed_keys(matrix, columns, start, width, rows, sorted_keys);
    for (Py_ssize_t c = 0; c < width; c++) {
        uint32_t *column = sorted_keys + c * rows;
        profile_column(column, spare, rows, (uint8_t *)rho->buf + c * slots, slots, seed,
                       (double *)stats->buf + c * ST_FIELDS);
    }
    Py_END_ALLOW_THREADS
    release(views, 5);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"parse", parse, METH_VARARGS, parse_doc},
    {"profile_block", profile_block, METH_VARARGS, profile_block_doc},
    {"profile_sorted", profile_sorted, METH_VARARGS, profile_sorted_doc},
    {"sort_float64", sort_float64, METH_VARARGS, sort_float64_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_letor",
    "A LETOR/SVMlight tokenizer (see parse) and the data profile's pass (see profile_block, "
    "sort_float64 and profile_sorted).", -1,
    methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__letor(void) { return PyModule_Create(&module); }
