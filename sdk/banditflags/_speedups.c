/* banditflags._speedups: the compiled fast paths of Client.track() and Client.decide() (issue 13's
 * budgets: track()'s whole cost, the decision span's overhead).
 *
 * One callable type, Tracker, bound to a client as its ``track`` attribute. A call it recognises (the
 * fast routes of Client.track in _client.py: a conversion, reward 1.0, no metric, by a Decision that
 * decide() made, by a bf2 token without rule, or by flag + unit for a decision-unit flag without
 * targeting) it records exactly as that Python code does, on the same objects (the flag's unit memory,
 * the client's Conversions, the arm's list of conversion ids). Anything else, and anything it cannot
 * finish without changing state first, it hands to the Python method *before* touching anything: the
 * Python code stays the reference and the general path, and tests run both (tests/sdk/test_speedups.py).
 *
 * The whole call holds the GIL and runs no Python code except Conversions.rotate (the rare generation
 * change), so it is atomic with respect to other threads: counts stay exact.
 *
 * A second type, Decider, does the same for decide()'s plain case, in or out of a recording span (see
 * there): every change it makes (unit memory, exposure counter) is done before it calls the
 * OpenTelemetry SDK.
 *
 * MurmurHash3 (x86_32 and x64_128, Austin Appleby's public-domain algorithm) is written out here so the
 * key need not be built as a str; tests check it against the mmh3 package on arbitrary text.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#define BF_BIG_OR_UNKNOWN_ENDIAN 1 /* the module refuses to load: the Python path is used */
#endif

/* ---- MurmurHash3 ------------------------------------------------------------------------------- */

static inline uint32_t rotl32(uint32_t x, int r) { return (x << r) | (x >> (32 - r)); }
static inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static inline uint32_t load32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint64_t load64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

static inline uint64_t fmix64(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    k ^= k >> 33;
    return k;
}

static uint32_t murmur3_32(const uint8_t *data, size_t len, uint32_t seed)
{
    const uint32_t c1 = 0xcc9e2d51, c2 = 0x1b873593;
    size_t nblocks = len / 4;
    uint32_t h1 = seed, k1;
    for (size_t i = 0; i < nblocks; i++) {
        k1 = load32(data + 4 * i);
        k1 *= c1;
        k1 = rotl32(k1, 15);
        k1 *= c2;
        h1 ^= k1;
        h1 = rotl32(h1, 13);
        h1 = h1 * 5 + 0xe6546b64;
    }
    const uint8_t *tail = data + 4 * nblocks;
    k1 = 0;
    switch (len & 3) {
    case 3: k1 ^= (uint32_t)tail[2] << 16; /* fall through */
    case 2: k1 ^= (uint32_t)tail[1] << 8;  /* fall through */
    case 1:
        k1 ^= tail[0];
        k1 *= c1;
        k1 = rotl32(k1, 15);
        k1 *= c2;
        h1 ^= k1;
    }
    h1 ^= (uint32_t)len;
    h1 ^= h1 >> 16;
    h1 *= 0x85ebca6b;
    h1 ^= h1 >> 13;
    h1 *= 0xc2b2ae35;
    h1 ^= h1 >> 16;
    return h1;
}

/* The first 64 bits of MurmurHash3_x64_128 (mmh3.hash64(key, signed=False)[0]). */
static uint64_t murmur3_64(const uint8_t *data, size_t len, uint64_t seed)
{
    const uint64_t c1 = 0x87c37b91114253d5ULL, c2 = 0x4cf5ad432745937fULL;
    size_t nblocks = len / 16;
    uint64_t h1 = seed, h2 = seed, k1, k2;
    for (size_t i = 0; i < nblocks; i++) {
        k1 = load64(data + 16 * i);
        k2 = load64(data + 16 * i + 8);
        k1 *= c1;
        k1 = rotl64(k1, 31);
        k1 *= c2;
        h1 ^= k1;
        h1 = rotl64(h1, 27);
        h1 += h2;
        h1 = h1 * 5 + 0x52dce729;
        k2 *= c2;
        k2 = rotl64(k2, 33);
        k2 *= c1;
        h2 ^= k2;
        h2 = rotl64(h2, 31);
        h2 += h1;
        h2 = h2 * 5 + 0x38495ab5;
    }
    const uint8_t *tail = data + 16 * nblocks;
    k1 = k2 = 0;
    switch (len & 15) {
    case 15: k2 ^= (uint64_t)tail[14] << 48; /* fall through */
    case 14: k2 ^= (uint64_t)tail[13] << 40; /* fall through */
    case 13: k2 ^= (uint64_t)tail[12] << 32; /* fall through */
    case 12: k2 ^= (uint64_t)tail[11] << 24; /* fall through */
    case 11: k2 ^= (uint64_t)tail[10] << 16; /* fall through */
    case 10: k2 ^= (uint64_t)tail[9] << 8;   /* fall through */
    case 9:
        k2 ^= (uint64_t)tail[8];
        k2 *= c2;
        k2 = rotl64(k2, 33);
        k2 *= c1;
        h2 ^= k2;
        /* fall through */
    case 8: k1 ^= (uint64_t)tail[7] << 56; /* fall through */
    case 7: k1 ^= (uint64_t)tail[6] << 48; /* fall through */
    case 6: k1 ^= (uint64_t)tail[5] << 40; /* fall through */
    case 5: k1 ^= (uint64_t)tail[4] << 32; /* fall through */
    case 4: k1 ^= (uint64_t)tail[3] << 24; /* fall through */
    case 3: k1 ^= (uint64_t)tail[2] << 16; /* fall through */
    case 2: k1 ^= (uint64_t)tail[1] << 8;  /* fall through */
    case 1:
        k1 ^= (uint64_t)tail[0];
        k1 *= c1;
        k1 = rotl64(k1, 31);
        k1 *= c2;
        h1 ^= k1;
    }
    h1 ^= (uint64_t)len;
    h2 ^= (uint64_t)len;
    h1 += h2;
    h2 += h1;
    h1 = fmix64(h1);
    h2 = fmix64(h2);
    h1 += h2;
    return h1;
}

/* prefix + unit as UTF-8 in buf (what mmh3 hashes for the str prefix + unit_id); -1 if too long or
 * not encodable (a lone surrogate: the Python path rejects it), with no exception left set. */
#define KEY_MAX 512
static Py_ssize_t join_utf8(PyObject *prefix, PyObject *unit, uint8_t *buf)
{
    Py_ssize_t pn, un;
    const char *p = PyUnicode_AsUTF8AndSize(prefix, &pn);
    if (p == NULL) {
        PyErr_Clear();
        return -1;
    }
    const char *u = PyUnicode_AsUTF8AndSize(unit, &un);
    if (u == NULL) {
        PyErr_Clear();
        return -1;
    }
    if (pn + un > KEY_MAX) return -1;
    memcpy(buf, p, (size_t)pn);
    memcpy(buf + pn, u, (size_t)un);
    return pn + un;
}

static PyObject *hex16(uint64_t v) /* "%016x" % v */
{
    static const char digits[] = "0123456789abcdef";
    PyObject *s = PyUnicode_New(16, 127);
    if (s == NULL) return NULL;
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(s);
    for (int i = 15; i >= 0; i--) {
        out[i] = (Py_UCS1)digits[v & 15];
        v >>= 4;
    }
    return s;
}

/* ---- what the fast path reads: set once by configure() ----------------------------------------- */

typedef struct {
    PyTypeObject *flag_type, *bucketed_type, *units_type, *conversions_type;
    PyObject *otel_dict; /* opentelemetry.trace's namespace, or NULL: tracing may be on, decline */
    /* slot offsets (member descriptors of the __slots__ classes) */
    Py_ssize_t f_key, f_version, f_binary, f_user_unit, f_units, f_credit_window, f_detour, f_table,
        f_prefix, f_did_prefix, f_conversions, f_counters, f_keys, f_values, f_propensities;
    Py_ssize_t u_cap, u_cur, u_old, u_on;
    Py_ssize_t m_cur, m_old, m_half;
    int ready;
} Layout;

static Layout L;

static PyObject *s_started, *s_flags, *s_token_heads, *s_conv_soon, *s_tracer_provider, *s_rotate,
    *s_reject, *s_flags_field, *s_state, *s_cached, *s_stale_at, *s_base, *s_seq, *s_end, *s_get_span_context, *s_errors,
    *s_attributes_kw;

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

static int slot_offset(PyTypeObject *type, const char *name, Py_ssize_t *out)
{
    PyObject *d = PyDict_GetItemString(type->tp_dict, name); /* borrowed */
    if (d == NULL || Py_TYPE(d) != &PyMemberDescr_Type) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not a slot", type->tp_name, name);
        return -1;
    }
    PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
    if (m->type != T_OBJECT_EX && m->type != T_OBJECT) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not an object slot", type->tp_name, name);
        return -1;
    }
    *out = m->offset;
    return 0;
}

static void set_slot(PyObject *obj, Py_ssize_t off, PyObject *value)
{
    PyObject *old = SLOT(obj, off);
    Py_INCREF(value);
    SLOT(obj, off) = value;
    Py_XDECREF(old);
}

static PyObject *configure(PyObject *module, PyObject *args)
{
    PyObject *flag_type, *bucketed_type, *units_type, *conversions_type, *otel;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O", &PyType_Type, &flag_type, &PyType_Type, &bucketed_type,
                          &PyType_Type, &units_type, &PyType_Type, &conversions_type, &otel))
        return NULL;
    Layout l;
    memset(&l, 0, sizeof l);
    l.flag_type = (PyTypeObject *)flag_type;
    l.bucketed_type = (PyTypeObject *)bucketed_type;
    l.units_type = (PyTypeObject *)units_type;
    l.conversions_type = (PyTypeObject *)conversions_type;
    struct { PyTypeObject *t; const char *name; Py_ssize_t *out; } slots[] = {
        {l.flag_type, "key", &l.f_key},
        {l.flag_type, "version", &l.f_version},
        {l.flag_type, "binary", &l.f_binary},
        {l.flag_type, "user_unit", &l.f_user_unit},
        {l.flag_type, "units", &l.f_units},
        {l.flag_type, "credit_window", &l.f_credit_window},
        {l.flag_type, "detour", &l.f_detour},
        {l.flag_type, "table", &l.f_table},
        {l.flag_type, "prefix", &l.f_prefix},
        {l.flag_type, "did_prefix", &l.f_did_prefix},
        {l.flag_type, "conversions", &l.f_conversions},
        {l.flag_type, "counters", &l.f_counters},
        {l.flag_type, "keys", &l.f_keys},
        {l.flag_type, "values", &l.f_values},
        {l.flag_type, "propensities", &l.f_propensities},
        {l.units_type, "cap", &l.u_cap},
        {l.units_type, "cur", &l.u_cur},
        {l.units_type, "old", &l.u_old},
        {l.units_type, "on", &l.u_on},
        {l.conversions_type, "cur", &l.m_cur},
        {l.conversions_type, "old", &l.m_old},
        {l.conversions_type, "half", &l.m_half},
    };
    for (size_t i = 0; i < sizeof slots / sizeof slots[0]; i++)
        if (slot_offset(slots[i].t, slots[i].name, slots[i].out) < 0) return NULL;
    if (PyModule_Check(otel)) {
        l.otel_dict = PyModule_GetDict(otel);
        Py_INCREF(l.otel_dict);
    }
    Py_INCREF(flag_type);
    Py_INCREF(bucketed_type);
    Py_INCREF(units_type);
    Py_INCREF(conversions_type);
    l.ready = 1;
    L = l; /* configured once, at import of _client (a second call leaks the first's references) */
    Py_RETURN_NONE;
}

/* ---- the fast path ----------------------------------------------------------------------------- */

enum { FAST_FALSE = 0, FAST_TRUE = 1, DECLINE = -1, FAILED = -2 };

typedef struct {
    PyObject_HEAD
    PyObject *client;      /* the Client */
    PyObject *fallback;    /* Client.track bound to it: the reference and general path */
    PyObject *conversions; /* client._conversions (fixed for its life) */
    PyObject *duplicates;  /* client._duplicates, an itertools.count (fixed for its life) */
    int tel_forced;
    vectorcallfunc vectorcall;
} Tracker;

static PyObject *monotonic_now(void)
{
#if defined(__linux__)
    /* time.monotonic() on Linux, bit for bit: CLOCK_MONOTONIC in ns, then seconds as a double. */
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) == 0) {
        int64_t ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
        double d = (ns % 1000000000 == 0) ? (double)(ns / 1000000000) : (double)ns / 1e9;
        return PyFloat_FromDouble(d);
    }
#endif
    PyObject *time = PyImport_ImportModule("time");
    if (time == NULL) return NULL;
    PyObject *r = PyObject_CallMethod(time, "monotonic", NULL);
    Py_DECREF(time);
    return r;
}

/* An int attribute of the client, or -1 (no exception left) */
static Py_ssize_t client_ssize(PyObject *client, PyObject *name)
{
    PyObject *v = PyObject_GetAttr(client, name);
    if (v == NULL) {
        PyErr_Clear();
        return -1;
    }
    Py_ssize_t n = PyLong_CheckExact(v) ? PyLong_AsSsize_t(v) : -1;
    Py_DECREF(v);
    if (n == -1 && PyErr_Occurred()) PyErr_Clear();
    return n;
}

static inline int is_hex16(PyObject *s)
{
    if (!PyUnicode_IS_ASCII(s) || PyUnicode_GET_LENGTH(s) != 16) return 0;
    const Py_UCS1 *c = PyUnicode_1BYTE_DATA(s);
    for (int i = 0; i < 16; i++)
        if (!((c[i] >= '0' && c[i] <= '9') || (c[i] >= 'a' && c[i] <= 'f'))) return 0;
    return 1;
}

/* ids = f.conversions[arm] (borrowed), if arm is in range and the list has room for the fast path
 * (under half its cap: at half, Python asks the worker to cut first). */
static PyObject *arm_ids(PyObject *f, PyObject *arm_obj, Py_ssize_t soon)
{
    PyObject *lists = SLOT(f, L.f_conversions);
    if (lists == NULL || !PyList_CheckExact(lists) || !PyLong_CheckExact(arm_obj)) return NULL;
    Py_ssize_t arm = PyLong_AsSsize_t(arm_obj);
    if (arm < 0 || arm >= PyList_GET_SIZE(lists)) {
        PyErr_Clear();
        return NULL;
    }
    PyObject *ids = PyList_GET_ITEM(lists, arm);
    if (!PyList_CheckExact(ids) || PyList_GET_SIZE(ids) >= soon) return NULL;
    return ids;
}

/* Counts a conversion of did (on arm, of flag f) once: Client.track's common tail. Never declines. */
static int convert(Tracker *t, PyObject *f, PyObject *arm_obj, PyObject *did, PyObject *ids,
                   PyObject *now)
{
    double cw = PyFloat_AS_DOUBLE(SLOT(f, L.f_credit_window));
    double now_d = PyFloat_AS_DOUBLE(now);
    PyObject *mk;
    if (SLOT(f, L.f_user_unit) == Py_True) {
        mk = PyTuple_Pack(3, SLOT(f, L.f_key), arm_obj, did);
        if (mk == NULL) return FAILED;
    } else {
        mk = did;
        Py_INCREF(mk);
    }
    PyObject *mem = t->conversions;
    PyObject *cur = SLOT(mem, L.m_cur);
    Py_INCREF(cur);
    /* held, not borrowed: Conversions.rotate runs Python code, during which the event worker may
     * take this list off the snapshot (a cut) and drop its last reference */
    Py_INCREF(ids);
    int result = FAST_TRUE;
    PyObject *first = PyDict_SetDefault(cur, mk, now); /* borrowed */
    if (first == NULL) {
        result = FAILED;
    } else if (first == now) { /* new to this generation: credited in the one before? */
        PyObject *before = PyDict_GetItemWithError(SLOT(mem, L.m_old), mk);
        if (before == NULL && PyErr_Occurred()) {
            result = FAILED;
        } else if (before != NULL && before != now && PyFloat_Check(before)
                   && now_d - PyFloat_AS_DOUBLE(before) <= cw) {
            if (PyDict_DelItem(cur, mk) < 0) PyErr_Clear(); /* a repeat stays in the one before */
            result = FAST_FALSE;
        } else {
            Py_ssize_t half = PyLong_AsSsize_t(SLOT(mem, L.m_half));
            if (half >= 0 && PyDict_GET_SIZE(cur) >= half) {
                PyObject *r = PyObject_CallMethodOneArg(mem, s_rotate, cur);
                if (r == NULL) result = FAILED;
                Py_XDECREF(r);
            } else if (half < 0) {
                PyErr_Clear();
            }
        }
    } else if (PyFloat_Check(first) && now_d - PyFloat_AS_DOUBLE(first) <= cw) {
        result = FAST_FALSE; /* credited before within its window */
    } else if (PyDict_SetItem(cur, mk, now) < 0) { /* its window is over: it counts again */
        result = FAILED;
    }
    Py_DECREF(cur);
    Py_DECREF(mk);
    if (result == FAST_FALSE) {
        PyObject *n = PyIter_Next(t->duplicates);
        Py_XDECREF(n);
        if (n == NULL) PyErr_Clear();
    } else if (result == FAST_TRUE && PyList_Append(ids, did) < 0) {
        result = FAILED;
    }
    Py_DECREF(ids);
    return result;
}

static inline int flag_ok(PyObject *f)
{
    return f != NULL && Py_TYPE(f) == L.flag_type && SLOT(f, L.f_binary) == Py_True
        && SLOT(f, L.f_version) != NULL && SLOT(f, L.f_credit_window) != NULL
        && PyFloat_CheckExact(SLOT(f, L.f_credit_window)) && SLOT(f, L.f_user_unit) != NULL
        && SLOT(f, L.f_key) != NULL;
}

/* track(d) with unit None: a Decision decide() made, or a bf2 token without rule. */
static int by_decision_or_token(Tracker *t, PyObject *d, Py_ssize_t soon)
{
    PyObject *holder = NULL, *f = NULL, *arm_obj = NULL, *did = NULL;
    int result = DECLINE;
    if (Py_TYPE(d) == L.bucketed_type) {
        if (PyTuple_GET_SIZE(d) < 12) return DECLINE;
        holder = PyObject_GetAttr(t->client, s_flags);
        if (holder == NULL || !PyDict_CheckExact(holder)) goto decline;
        f = PyDict_GetItemWithError(holder, PyTuple_GET_ITEM(d, 0));
        if (!flag_ok(f) || PyTuple_GET_ITEM(d, 4) != SLOT(f, L.f_version)) goto decline;
        arm_obj = PyTuple_GET_ITEM(d, 5);
        did = PyTuple_GET_ITEM(d, 11);
        if (!PyUnicode_CheckExact(did)) goto decline;
        Py_INCREF(did);
    } else if (PyUnicode_CheckExact(d)) {
        /* bf2:flag:version:arm:did, its head looked up whole in client._token_heads */
        Py_ssize_t n = PyUnicode_GET_LENGTH(d);
        if (n < 18 || PyUnicode_READ_CHAR(d, n - 17) != ':') return DECLINE;
        holder = PyObject_GetAttr(t->client, s_token_heads);
        if (holder == NULL || !PyDict_CheckExact(holder)) goto decline;
        PyObject *head = PyUnicode_Substring(d, 0, n - 17);
        if (head == NULL) goto decline;
        PyObject *hit = PyDict_GetItemWithError(holder, head);
        Py_DECREF(head);
        if (hit == NULL || !PyTuple_CheckExact(hit) || PyTuple_GET_SIZE(hit) != 2) goto decline;
        f = PyTuple_GET_ITEM(hit, 0);
        arm_obj = PyTuple_GET_ITEM(hit, 1);
        if (!flag_ok(f)) goto decline;
        did = PyUnicode_Substring(d, n - 16, n);
        if (did == NULL) goto decline;
        if (!is_hex16(did)) goto decline;
    } else {
        return DECLINE;
    }
    PyObject *ids = arm_ids(f, arm_obj, soon);
    if (ids == NULL) goto decline;
    PyObject *now = monotonic_now();
    if (now == NULL) {
        result = FAILED;
        goto done;
    }
    result = convert(t, f, arm_obj, did, ids, now);
    Py_DECREF(now);
    goto done;
decline:
    if (PyErr_Occurred()) PyErr_Clear();
    result = DECLINE;
done:
    Py_XDECREF(did);
    Py_XDECREF(holder);
    return result;
}

/* The decision remembered in entry e, if the unit was served it within the credit window: 1 and its
 * arm and id (new references; an int id, as variant() keeps it, formatted now); 0 if e is absent or
 * its window is over; DECLINE if it is of another version, of a rule, or malformed. */
static int served(PyObject *e, PyObject *version, double now, double cw, PyObject **arm, PyObject **did)
{
    if (e == NULL) return 0;
    if (!PyTuple_CheckExact(e) || PyTuple_GET_SIZE(e) != 5 || !PyFloat_CheckExact(PyTuple_GET_ITEM(e, 2)))
        return DECLINE;
    if (now - PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(e, 2)) > cw) return 0;
    PyObject *edid = PyTuple_GET_ITEM(e, 3);
    if (PyTuple_GET_ITEM(e, 0) != version || PyTuple_GET_ITEM(e, 4) != Py_None || edid == Py_None)
        return DECLINE;
    if (PyLong_CheckExact(edid)) {
        uint64_t v = PyLong_AsUnsignedLongLong(edid);
        if (v == (uint64_t)-1 && PyErr_Occurred()) return DECLINE;
        *did = hex16(v);
        if (*did == NULL) return DECLINE;
    } else if (PyUnicode_CheckExact(edid)) {
        *did = Py_NewRef(edid);
    } else {
        return DECLINE;
    }
    *arm = Py_NewRef(PyTuple_GET_ITEM(e, 1));
    return 1;
}

/* The arm the unit buckets into now and its decision id (unit_did(): the same in every process), and
 * the entry that remembers them: new references, or -1 (no exception left). */
static int bucket_now(PyObject *f, PyObject *unit, PyObject *now, PyObject **arm, PyObject **did,
                      PyObject **entry)
{
    PyObject *table = SLOT(f, L.f_table), *prefix = SLOT(f, L.f_prefix);
    PyObject *did_prefix = SLOT(f, L.f_did_prefix);
    if (table == NULL || !PyBytes_CheckExact(table) || prefix == NULL || !PyUnicode_CheckExact(prefix)
        || did_prefix == NULL || !PyUnicode_CheckExact(did_prefix))
        return -1;
    uint8_t buf[KEY_MAX];
    Py_ssize_t n = join_utf8(prefix, unit, buf);
    if (n < 0) return -1;
    uint64_t bucket = ((uint64_t)murmur3_32(buf, (size_t)n, 0) * 10000) >> 32;
    if ((Py_ssize_t)bucket >= PyBytes_GET_SIZE(table)) return -1;
    n = join_utf8(did_prefix, unit, buf);
    if (n < 0) return -1;
    *arm = PyLong_FromLong((unsigned char)PyBytes_AS_STRING(table)[bucket]);
    *did = hex16(murmur3_64(buf, (size_t)n, 0));
    *entry = (*arm && *did) ? PyTuple_Pack(5, SLOT(f, L.f_version), *arm, now, *did, Py_None) : NULL;
    if (*entry == NULL) {
        Py_CLEAR(*arm);
        Py_CLEAR(*did);
        PyErr_Clear();
        return -1;
    }
    /* Its items are two ints, a float, a str and None: no cycle can run through it, so the collector
     * need not walk it (it would untrack it itself, but only after walking it in a collection). */
    if (PyLong_CheckExact(SLOT(f, L.f_version))) PyObject_GC_UnTrack(*entry);
    return 0;
}

/* _units.keyed_dict(): an empty dict that keeps its entries' hashes (see there). */
static PyObject *keyed_dict(void)
{
    PyObject *d = PyDict_New();
    if (d == NULL) return NULL;
    PyObject *zero = PyLong_FromLong(0);
    if (zero == NULL || PyDict_SetItem(d, zero, Py_None) < 0 || PyDict_DelItem(d, zero) < 0) {
        Py_XDECREF(zero);
        Py_DECREF(d);
        return NULL;
    }
    Py_DECREF(zero);
    return d;
}

/* After a unit was put in u.cur (the dict ucur): the flag's decisions are remembered from now on, and
 * a full generation rotates (UnitMemory.put). */
static void remembered(PyObject *u, PyObject *ucur)
{
    if (SLOT(u, L.u_on) != Py_True) set_slot(u, L.u_on, Py_True);
    PyObject *cap = SLOT(u, L.u_cap);
    Py_ssize_t capn = (cap != NULL && PyLong_CheckExact(cap)) ? PyLong_AsSsize_t(cap) : -1;
    if (capn == -1 && PyErr_Occurred()) PyErr_Clear();
    if (capn >= 0 && PyDict_GET_SIZE(ucur) * 2 > capn && SLOT(u, L.u_cur) == ucur) {
        PyObject *fresh = keyed_dict();
        if (fresh == NULL) {
            PyErr_Clear(); /* rotates on the next put */
            return;
        }
        set_slot(u, L.u_old, ucur);
        set_slot(u, L.u_cur, fresh);
        Py_DECREF(fresh);
    }
}

/* track(flag, unit) for a decision-unit binary flag: the unit's remembered decision within the credit
 * window, else (no rule, not killed) the arm it buckets into now, remembered from now on. */
static int by_unit(Tracker *t, PyObject *key, PyObject *unit, Py_ssize_t soon)
{
    PyObject *flags = NULL, *now = NULL, *did = NULL, *arm = NULL, *entry = NULL, *ucur = NULL;
    PyObject *ids;
    int result = DECLINE;
    if (PyUnicode_GET_LENGTH(unit) == 0) return DECLINE;
    flags = PyObject_GetAttr(t->client, s_flags);
    if (flags == NULL || !PyDict_CheckExact(flags)) goto decline;
    PyObject *f = PyDict_GetItemWithError(flags, key);
    if (!flag_ok(f) || SLOT(f, L.f_user_unit) != Py_False) goto decline;
    PyObject *u = SLOT(f, L.f_units);
    if (u == NULL || Py_TYPE(u) != L.units_type) goto decline;
    ucur = SLOT(u, L.u_cur);
    PyObject *uold = SLOT(u, L.u_old);
    if (ucur == NULL || uold == NULL || !PyDict_CheckExact(ucur) || !PyDict_CheckExact(uold))
        goto decline;
    Py_INCREF(ucur);
    now = monotonic_now();
    if (now == NULL) goto decline;
    PyObject *version = SLOT(f, L.f_version);
    double cw = PyFloat_AS_DOUBLE(SLOT(f, L.f_credit_window)), now_d = PyFloat_AS_DOUBLE(now);
    PyObject *e = PyDict_GetItemWithError(ucur, unit);
    if (e == NULL && !PyErr_Occurred()) e = PyDict_GetItemWithError(uold, unit);
    if (e == NULL && PyErr_Occurred()) goto decline;
    int r = served(e, version, now_d, cw, &arm, &did);
    if (r == DECLINE) goto decline;
    if (r == 0) { /* not served within the window: bucketed now (unless killed or targeted) */
        if (SLOT(f, L.f_detour) != Py_False) goto decline;
        if (bucket_now(f, unit, now, &arm, &did, &entry) < 0) goto decline;
    }
    if ((ids = arm_ids(f, arm, soon)) == NULL) goto decline; /* checked before anything changes */
    if (r == 0) {
        /* A miss then an insert at the same place: the insert finds in cache what the miss fetched. */
        if (PyDict_SetItem(ucur, unit, entry) < 0) goto decline; /* nothing changed if it failed */
        remembered(u, ucur);
    }
    result = convert(t, f, arm, did, ids, now);
    goto done;
decline:
    if (PyErr_Occurred()) PyErr_Clear();
    result = DECLINE;
done:
    Py_XDECREF(entry);
    Py_XDECREF(did);
    Py_XDECREF(arm);
    Py_XDECREF(now);
    Py_XDECREF(ucur);
    Py_XDECREF(flags);
    return result;
}

static int fast(Tracker *t, PyObject *d, PyObject *unit)
{
    if (!L.ready || t->tel_forced) return DECLINE;
    PyObject *started = PyObject_GetAttr(t->client, s_started);
    if (started == NULL) {
        PyErr_Clear();
        return DECLINE;
    }
    Py_DECREF(started); /* a bool: immortal in effect (True/False are never freed) */
    if (started != Py_True) return DECLINE; /* the Python path starts the client */
    if (L.otel_dict == NULL) return DECLINE;
    PyObject *provider = PyDict_GetItemWithError(L.otel_dict, s_tracer_provider);
    if (provider == NULL || provider != Py_None) { /* a tracer provider: telemetry may record */
        PyErr_Clear();
        return DECLINE;
    }
    Py_ssize_t soon = client_ssize(t->client, s_conv_soon);
    if (soon <= 0) return DECLINE; /* closed (0) or unreadable */
    if (unit == Py_None) return by_decision_or_token(t, d, soon);
    if (PyUnicode_CheckExact(unit) && PyUnicode_CheckExact(d)) return by_unit(t, d, unit, soon);
    return DECLINE;
}

static PyObject *tracker_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf,
                                    PyObject *kwnames)
{
    Tracker *t = (Tracker *)self;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (kwnames == NULL && (nargs == 1 || nargs == 2)) {
        int r = fast(t, args[0], nargs == 2 ? args[1] : Py_None);
        if (r == FAST_TRUE) Py_RETURN_TRUE;
        if (r == FAST_FALSE) Py_RETURN_FALSE;
        if (r == FAILED) { /* what the Python path's except clause does: reject and count */
            if (PyErr_Occurred() && !PyErr_ExceptionMatches(PyExc_Exception))
                return NULL; /* KeyboardInterrupt, SystemExit (from Conversions.rotate): raised on */
            PyErr_Clear();
            return PyObject_CallMethodNoArgs(t->client, s_reject);
        }
    }
    return PyObject_Vectorcall(t->fallback, args, nargsf, kwnames);
}

static PyObject *tracker_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *client, *fallback, *conversions, *duplicates;
    int tel_forced;
    static char *kwlist[] = {"client", "fallback", "conversions", "duplicates", "tel_forced", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOp", kwlist, &client, &fallback, &conversions,
                                     &duplicates, &tel_forced))
        return NULL;
    if (!L.ready) {
        PyErr_SetString(PyExc_RuntimeError, "banditflags._speedups.configure() was not called");
        return NULL;
    }
    if (Py_TYPE(conversions) != L.conversions_type || !PyIter_Check(duplicates)
        || !PyCallable_Check(fallback)) {
        PyErr_SetString(PyExc_TypeError, "Tracker: conversions, duplicates or fallback of the wrong type");
        return NULL;
    }
    Tracker *t = (Tracker *)type->tp_alloc(type, 0);
    if (t == NULL) return NULL;
    Py_INCREF(client);
    t->client = client;
    Py_INCREF(fallback);
    t->fallback = fallback;
    Py_INCREF(conversions);
    t->conversions = conversions;
    Py_INCREF(duplicates);
    t->duplicates = duplicates;
    t->tel_forced = tel_forced;
    t->vectorcall = tracker_vectorcall;
    return (PyObject *)t;
}

static int tracker_traverse(Tracker *t, visitproc visit, void *arg)
{
    Py_VISIT(t->client);
    Py_VISIT(t->fallback);
    Py_VISIT(t->conversions);
    Py_VISIT(t->duplicates);
    return 0;
}

static int tracker_clear(Tracker *t)
{
    Py_CLEAR(t->client);
    Py_CLEAR(t->fallback);
    Py_CLEAR(t->conversions);
    Py_CLEAR(t->duplicates);
    return 0;
}

static void tracker_dealloc(Tracker *t)
{
    PyObject_GC_UnTrack(t);
    tracker_clear(t);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

static PyObject *tracker_get_doc(Tracker *t, void *closure)
{
    return t->fallback ? PyObject_GetAttrString(t->fallback, "__doc__") : Py_NewRef(Py_None);
}

static PyObject *tracker_get_wrapped(Tracker *t, void *closure)
{
    return Py_NewRef(t->fallback ? t->fallback : Py_None);
}

static PyGetSetDef tracker_getset[] = {
    {"__doc__", (getter)tracker_get_doc, NULL, NULL, NULL},
    /* inspect.signature() and help() follow __wrapped__ to the Python method */
    {"__wrapped__", (getter)tracker_get_wrapped, NULL, NULL, NULL},
    {NULL},
};

static PyMemberDef tracker_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(Tracker, vectorcall), READONLY, NULL},
    {NULL},
};

static PyTypeObject TrackerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "banditflags._speedups.Tracker",
    .tp_basicsize = sizeof(Tracker),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "Client.track's compiled fast path, bound to one client; anything else goes to the "
              "Python method it wraps.",
    .tp_new = tracker_new,
    .tp_dealloc = (destructor)tracker_dealloc,
    .tp_traverse = (traverseproc)tracker_traverse,
    .tp_clear = (inquiry)tracker_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Tracker, vectorcall),
    .tp_getset = tracker_getset,
    .tp_members = tracker_members,
};

/* ---- decide() -------------------------------------------------------------------------------------- */

/* Decider, bound to one client: decide(flag, unit) for the plain case (a started client, a fresh
 * config, a flag without targeting with decision units, a str unit id), recorded on the same objects as
 * Client._decide and the Python span path of Client.decide: the unit memory, the arm's exposure counter
 * and a Bucketed Decision. Called with the current context ``ctx`` inside a recording span, it also
 * makes the child span (the client's tracer, under ``ctx``, with the cached attributes; the span
 * attributes and the unit's context id must be cached already) and puts the span's ids in the
 * Decision; with None, no span. Anything else it answers None having changed nothing, and the Python
 * code, the reference and the general path, takes it (tests/sdk/test_telemetry.py and
 * test_speedups.py run both).
 *
 * Why: next to the OpenTelemetry SDK's span code, each step of the Python path (bucketing, decision
 * id, unit memory, attribute copy, Decision) cost ~4x its isolated time (caches), ~1.7 us in all;
 * here they are a few hundred instructions. Without a span, decide() costs about half. */
typedef struct {
    PyObject_HEAD
    PyObject *client;      /* the Client */
    PyObject *tel;         /* its Telemetry (span failures are counted in tel.errors) */
    PyObject *start_span;  /* tel.start_span */
    PyObject *split_attrs; /* tel.split_attrs: exposure counter -> the split span's attributes */
    PyObject *cid_cache;   /* tel.cid_cache, or None when no context id is recorded */
    PyObject *units_dict;  /* banditflags._units' namespace: _BASE and _seq make the decision ids */
    PyObject *split;       /* Reason.SPLIT */
    PyObject *span_name;   /* "feature_flag.evaluation" */
    PyObject *context_id;  /* "feature_flag.context.id" */
    vectorcallfunc vectorcall;
} Decider;

/* The next decision id as _client makes it, "%016x" % ((_BASE + next(_seq)) & MASK); NULL (no
 * exception left) if the module's names are not what they should be. */
static PyObject *next_did(PyObject *units_dict)
{
    PyObject *base = PyDict_GetItemWithError(units_dict, s_base);
    PyObject *seq = base ? PyDict_GetItemWithError(units_dict, s_seq) : NULL;
    if (seq == NULL || !PyLong_CheckExact(base)) goto fail;
    uint64_t b = PyLong_AsUnsignedLongLong(base);
    if (b == (uint64_t)-1 && PyErr_Occurred()) goto fail;
    PyObject *n = PyIter_Next(seq);
    if (n == NULL) goto fail;
    uint64_t k = PyLong_AsUnsignedLongLongMask(n); /* the sum wraps in 64 bits as & MASK does */
    Py_DECREF(n);
    if (k == (uint64_t)-1 && PyErr_Occurred()) goto fail;
    return hex16(b + k);
fail:
    PyErr_Clear();
    return NULL;
}

static void count_error(PyObject *tel)
{
    PyErr_Clear();
    PyObject *errors = PyObject_GetAttr(tel, s_errors);
    if (errors != NULL) {
        PyObject *one = PyLong_FromLong(1);
        PyObject *more = one ? PyNumber_Add(errors, one) : NULL;
        if (more != NULL) PyObject_SetAttr(tel, s_errors, more);
        Py_XDECREF(more);
        Py_XDECREF(one);
        Py_DECREF(errors);
    }
    PyErr_Clear();
}

/* A borrowed item of the tuple slot ``off`` of f, or NULL */
static inline PyObject *slot_item(PyObject *f, Py_ssize_t off, Py_ssize_t i)
{
    PyObject *t = SLOT(f, off);
    return (t != NULL && PyTuple_CheckExact(t) && i < PyTuple_GET_SIZE(t)) ? PyTuple_GET_ITEM(t, i) : NULL;
}

/* The decision (a new reference), or NULL: for None (no exception set, nothing changed), or with a
 * BaseException that is not an Exception raised by the span (then the exposure is counted). */
static PyObject *decide(Decider *sd, PyObject *flag, PyObject *unit, PyObject *ctx)
{
    PyObject *st = NULL, *flags = NULL, *cached = NULL, *stale_at = NULL, *now = NULL, *did = NULL;
    PyObject *entry = NULL, *attrs = NULL, *d = NULL, *arm = NULL, *span = NULL, *sc = NULL;
    PyObject *out = NULL;
    int keep_error = 0;
    if (!L.ready || !PyUnicode_CheckExact(flag) || !PyUnicode_CheckExact(unit)
        || PyUnicode_GET_LENGTH(unit) == 0)
        return NULL;
    PyObject *started = PyObject_GetAttr(sd->client, s_started);
    if (started == NULL) goto done;
    Py_DECREF(started); /* a bool */
    if (started != Py_True) goto done;
    /* st = client._state; f = st.flags.get(flag); not cached, not stale */
    if ((st = PyObject_GetAttr(sd->client, s_state)) == NULL) goto done;
    if ((flags = PyObject_GetAttr(st, s_flags_field)) == NULL || !PyDict_CheckExact(flags)) goto done;
    PyObject *f = PyDict_GetItemWithError(flags, flag);
    if (f == NULL || Py_TYPE(f) != L.flag_type) goto done;
    if (SLOT(f, L.f_detour) != Py_False || SLOT(f, L.f_user_unit) != Py_False) goto done;
    if ((cached = PyObject_GetAttr(st, s_cached)) == NULL || cached != Py_False) goto done;
    if ((stale_at = PyObject_GetAttr(st, s_stale_at)) == NULL || !PyFloat_CheckExact(stale_at)) goto done;
    if ((now = monotonic_now()) == NULL) goto done;
    if (PyFloat_AS_DOUBLE(now) >= PyFloat_AS_DOUBLE(stale_at)) goto done; /* stale: Python says so */
    /* the arm: f.table[(mmh3.hash(f.prefix + unit, 0, False) * 10_000) >> 32] */
    PyObject *table = SLOT(f, L.f_table), *prefix = SLOT(f, L.f_prefix), *version = SLOT(f, L.f_version);
    PyObject *key = SLOT(f, L.f_key);
    if (table == NULL || !PyBytes_CheckExact(table) || prefix == NULL || !PyUnicode_CheckExact(prefix)
        || version == NULL || key == NULL)
        goto done;
    uint8_t buf[KEY_MAX];
    Py_ssize_t n = join_utf8(prefix, unit, buf);
    if (n < 0) goto done;
    uint64_t bucket = ((uint64_t)murmur3_32(buf, (size_t)n, 0) * 10000) >> 32;
    if ((Py_ssize_t)bucket >= PyBytes_GET_SIZE(table)) goto done;
    Py_ssize_t a = (unsigned char)PyBytes_AS_STRING(table)[bucket];
    PyObject *counter = slot_item(f, L.f_counters, a), *k = slot_item(f, L.f_keys, a);
    PyObject *v = slot_item(f, L.f_values, a), *p = slot_item(f, L.f_propensities, a);
    if (counter == NULL || k == NULL || v == NULL || p == NULL || !PyIter_Check(counter)) goto done;
    /* in a span, its attributes: the cached split ones, plus the unit's cached context id */
    if (ctx != Py_None) {
        PyObject *base = PyDict_GetItemWithError(sd->split_attrs, counter);
        if (base == NULL || !PyDict_CheckExact(base)) goto done;
        if (sd->cid_cache != Py_None) {
            PyObject *cid = PyDict_GetItemWithError(sd->cid_cache, unit);
            if (cid == NULL) goto done;
            attrs = PyDict_Copy(base);
            if (attrs == NULL || PyDict_SetItem(attrs, sd->context_id, cid) < 0) goto done;
        } else {
            attrs = Py_NewRef(base);
        }
    }
    /* the unit memory: u.cur[unit] = (version, arm, now, did, None), rotated at half its cap */
    PyObject *u = SLOT(f, L.f_units);
    if (u == NULL || Py_TYPE(u) != L.units_type) goto done;
    PyObject *ucur = SLOT(u, L.u_cur), *cap = SLOT(u, L.u_cap);
    if (ucur == NULL || !PyDict_CheckExact(ucur) || cap == NULL || !PyLong_CheckExact(cap)) goto done;
    Py_ssize_t capn = PyLong_AsSsize_t(cap);
    if (capn < 0) goto done;
    if ((arm = PyLong_FromSsize_t(a)) == NULL || (did = next_did(sd->units_dict)) == NULL) goto done;
    if ((entry = PyTuple_Pack(5, version, arm, now, did, Py_None)) == NULL) goto done;
    /* the Decision, made now so that nothing can fail after the first change but the span */
    if ((d = L.bucketed_type->tp_alloc(L.bucketed_type, 13)) == NULL) goto done;
    PyObject *fields[13] = {key, k, v, sd->split, version, arm, p, Py_None, Py_None, Py_None, Py_None, did,
                            Py_None};
    for (int i = 0; i < 13; i++) PyTuple_SET_ITEM(d, i, Py_NewRef(fields[i]));
    Py_INCREF(ucur); /* the worker may swap generations while the span runs Python code */
    int set = PyDict_SetItem(ucur, unit, entry);
    if (set == 0 && PyDict_GET_SIZE(ucur) * 2 > capn && SLOT(u, L.u_cur) == ucur) {
        PyObject *fresh = keyed_dict(); /* UnitMemory.put's rotation (on stays as it is) */
        if (fresh != NULL) {
            set_slot(u, L.u_old, ucur);
            set_slot(u, L.u_cur, fresh);
            Py_DECREF(fresh);
        }
    }
    Py_DECREF(ucur);
    if (set < 0) goto done; /* nothing changed */
    PyObject *next = PyIter_Next(counter); /* the exposure: next(f.counters[arm]) */
    Py_XDECREF(next);
    PyErr_Clear();
    out = Py_NewRef(d);
    if (ctx == Py_None) goto done; /* not in a span: the Decision as made */
    /* the span: tel.start_span(SPAN_NAME, ctx, attributes=attrs).end(); its ids into the Decision */
    PyObject *args[3] = {sd->span_name, ctx, attrs};
    span = PyObject_Vectorcall(sd->start_span, args, 2, s_attributes_kw);
    if (span == NULL) goto span_failed;
    PyObject *ended = PyObject_CallMethodNoArgs(span, s_end);
    if (ended == NULL) goto span_failed;
    Py_DECREF(ended);
    if ((sc = PyObject_CallMethodNoArgs(span, s_get_span_context)) == NULL) goto span_failed;
    if (!PyTuple_Check(sc) || PyTuple_GET_SIZE(sc) < 6) goto span_failed;
    if (PyTuple_GET_ITEM(sc, 5) == Py_True) { /* is_valid */
        PyObject *tid = PyTuple_GET_ITEM(sc, 0), *sid = PyTuple_GET_ITEM(sc, 1);
        /* d is ours alone still (refcount 2: d and out): filled in place, as a new tuple is */
        Py_SETREF(((PyTupleObject *)d)->ob_item[9], Py_NewRef(tid));
        Py_SETREF(((PyTupleObject *)d)->ob_item[10], Py_NewRef(sid));
    }
    goto done;
span_failed:
    if (PyErr_Occurred() && !PyErr_ExceptionMatches(PyExc_Exception)) {
        /* KeyboardInterrupt, SystemExit: raised on, as the Python path's ``except Exception`` does
         * (the exposure stays counted there too) */
        Py_CLEAR(out);
        keep_error = 1;
        goto done;
    }
    count_error(sd->tel);
done:
    if (out == NULL && !keep_error && PyErr_Occurred()) PyErr_Clear();
    Py_XDECREF(sc);
    Py_XDECREF(span);
    Py_XDECREF(d);
    Py_XDECREF(entry);
    Py_XDECREF(did);
    Py_XDECREF(arm);
    Py_XDECREF(attrs);
    Py_XDECREF(now);
    Py_XDECREF(stale_at);
    Py_XDECREF(cached);
    Py_XDECREF(flags);
    Py_XDECREF(st);
    return out;
}

static PyObject *decider_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (kwnames != NULL || PyVectorcall_NARGS(nargsf) != 3) {
        PyErr_SetString(PyExc_TypeError, "Decider(flag, unit_id, context_or_None)");
        return NULL;
    }
    PyObject *d = decide((Decider *)self, args[0], args[1], args[2]);
    if (d == NULL && PyErr_Occurred()) return NULL;
    return d != NULL ? d : Py_NewRef(Py_None);
}

static PyObject *decider_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *client, *tel, *start_span, *split_attrs, *cid_cache, *units, *split, *span_name, *context_id;
    static char *kwlist[] = {"client", "tel", "start_span", "split_attrs", "cid_cache", "units", "split",
                             "span_name", "context_id", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOO!OO!OUU", kwlist, &client, &tel, &start_span,
                                     &PyDict_Type, &split_attrs, &cid_cache, &PyModule_Type, &units, &split,
                                     &span_name, &context_id))
        return NULL;
    if (!L.ready) {
        PyErr_SetString(PyExc_RuntimeError, "banditflags._speedups.configure() was not called");
        return NULL;
    }
    if (cid_cache != Py_None && !PyDict_CheckExact(cid_cache)) {
        PyErr_SetString(PyExc_TypeError, "Decider: cid_cache must be a dict or None");
        return NULL;
    }
    Decider *sd = (Decider *)type->tp_alloc(type, 0);
    if (sd == NULL) return NULL;
    sd->client = Py_NewRef(client);
    sd->tel = Py_NewRef(tel);
    sd->start_span = Py_NewRef(start_span);
    sd->split_attrs = Py_NewRef(split_attrs);
    sd->cid_cache = Py_NewRef(cid_cache);
    sd->units_dict = Py_NewRef(PyModule_GetDict(units));
    sd->split = Py_NewRef(split);
    sd->span_name = Py_NewRef(span_name);
    sd->context_id = Py_NewRef(context_id);
    sd->vectorcall = decider_vectorcall;
    return (PyObject *)sd;
}

static int decider_traverse(Decider *sd, visitproc visit, void *arg)
{
    Py_VISIT(sd->client);
    Py_VISIT(sd->tel);
    Py_VISIT(sd->start_span);
    Py_VISIT(sd->split_attrs);
    Py_VISIT(sd->cid_cache);
    Py_VISIT(sd->units_dict);
    Py_VISIT(sd->split);
    return 0;
}

static int decider_clear(Decider *sd)
{
    Py_CLEAR(sd->client);
    Py_CLEAR(sd->tel);
    Py_CLEAR(sd->start_span);
    Py_CLEAR(sd->split_attrs);
    Py_CLEAR(sd->cid_cache);
    Py_CLEAR(sd->units_dict);
    Py_CLEAR(sd->split);
    Py_CLEAR(sd->span_name);
    Py_CLEAR(sd->context_id);
    return 0;
}

static void decider_dealloc(Decider *sd)
{
    PyObject_GC_UnTrack(sd);
    decider_clear(sd);
    Py_TYPE(sd)->tp_free((PyObject *)sd);
}

static PyMemberDef decider_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(Decider, vectorcall), READONLY, NULL},
    {NULL},
};

static PyTypeObject DeciderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "banditflags._speedups.Decider",
    .tp_basicsize = sizeof(Decider),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "decide()'s plain case, compiled, for one client: (flag, unit_id, context or None) -> a "
              "Decision, or None (nothing changed) for the Python path to take the call.",
    .tp_new = decider_new,
    .tp_dealloc = (destructor)decider_dealloc,
    .tp_traverse = (traverseproc)decider_traverse,
    .tp_clear = (inquiry)decider_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Decider, vectorcall),
    .tp_members = decider_members,
};

/* ---- the hashes, for the tests ------------------------------------------------------------------ */

static PyObject *py_hash32(PyObject *module, PyObject *arg)
{
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(arg, &n);
    if (s == NULL) return NULL;
    return PyLong_FromUnsignedLong(murmur3_32((const uint8_t *)s, (size_t)n, 0));
}

static PyObject *py_hash64(PyObject *module, PyObject *arg)
{
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(arg, &n);
    if (s == NULL) return NULL;
    return PyLong_FromUnsignedLongLong(murmur3_64((const uint8_t *)s, (size_t)n, 0));
}

static PyMethodDef module_methods[] = {
    {"configure", configure, METH_VARARGS,
     "configure(FlagSnapshot, Bucketed, UnitMemory, Conversions, otel_trace_module): once, at import."},
    {"hash32", py_hash32, METH_O, "mmh3.hash(s, 0, signed=False), for the tests."},
    {"hash64", py_hash64, METH_O, "mmh3.hash64(s, signed=False)[0], for the tests."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "banditflags._speedups",
    "The compiled fast paths of Client.track() and Client.decide() (see the C source).",
    -1, module_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__speedups(void)
{
#ifdef BF_BIG_OR_UNKNOWN_ENDIAN
    PyErr_SetString(PyExc_ImportError, "banditflags._speedups needs a little-endian machine");
    return NULL;
#else
    if (PyType_Ready(&TrackerType) < 0) return NULL;
    s_started = PyUnicode_InternFromString("_started");
    s_flags = PyUnicode_InternFromString("_flags");
    s_token_heads = PyUnicode_InternFromString("_token_heads");
    s_conv_soon = PyUnicode_InternFromString("_conv_soon");
    s_tracer_provider = PyUnicode_InternFromString("_TRACER_PROVIDER");
    s_rotate = PyUnicode_InternFromString("rotate");
    s_reject = PyUnicode_InternFromString("_reject");
    s_flags_field = PyUnicode_InternFromString("flags");
    s_state = PyUnicode_InternFromString("_state");
    s_cached = PyUnicode_InternFromString("cached");
    s_stale_at = PyUnicode_InternFromString("stale_at");
    s_base = PyUnicode_InternFromString("_BASE");
    s_seq = PyUnicode_InternFromString("_seq");
    s_end = PyUnicode_InternFromString("end");
    s_get_span_context = PyUnicode_InternFromString("get_span_context");
    s_errors = PyUnicode_InternFromString("errors");
    s_attributes_kw = Py_BuildValue("(s)", "attributes");
    if (!s_started || !s_flags || !s_token_heads || !s_conv_soon || !s_tracer_provider || !s_rotate
        || !s_reject || !s_flags_field || !s_state || !s_cached || !s_stale_at || !s_base || !s_seq || !s_end
        || !s_get_span_context || !s_errors || !s_attributes_kw)
        return NULL;
    if (PyType_Ready(&DeciderType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL) return NULL;
    Py_INCREF(&TrackerType);
    if (PyModule_AddObject(m, "Tracker", (PyObject *)&TrackerType) < 0) {
        Py_DECREF(&TrackerType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&DeciderType);
    if (PyModule_AddObject(m, "Decider", (PyObject *)&DeciderType) < 0) {
        Py_DECREF(&DeciderType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
#endif
}
