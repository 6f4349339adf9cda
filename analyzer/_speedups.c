/* Optional C fast paths for confscope's two inherently sequential loops.
 *
 * 1. Capture record walkers (pcap, and pcapng packet blocks): bytes in, record columns out.
 * 2. tshark's per-packet RTP stream statistics for many streams at once, in capture order, with
 *    a fixed-size state row per stream.
 *
 * The Python code (analyzer/capture/formats.py, analyzer/rtpstats.py) is the reference and the
 * fallback; analyzer/speedups.py wraps this module. Only the CPython C API is used: arrays come
 * in through the buffer protocol (numpy arrays allocated by the Python side), no numpy headers.
 * The GIL is released while the loops run.
 */
#define PY_SSIZE_T_CLEAN
/* Bumped with any change of a function's arguments or results; analyzer/speedups.py ignores a
 * build of another version (a stale in-place build after an edit). */
#define API_VERSION 1
#include <Python.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ------------------------------------------------------------------------- byte access */

static inline uint32_t read_u32(const uint8_t *p, int big_endian)
{
    if (big_endian)
        return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

static inline uint32_t read_u16(const uint8_t *p, int big_endian)
{
    return big_endian ? (uint32_t)p[0] << 8 | p[1] : (uint32_t)p[1] << 8 | p[0];
}

/* Record walks chase lengths through the buffer, a dependent load per record: fetching the cache
 * lines some distance ahead hides the memory latency (about 4x on 500-byte records). */
#define PREFETCH_DISTANCE 4096
#define CACHE_LINE 64
#if defined(__GNUC__) || defined(__clang__)
#define PREFETCH(address) __builtin_prefetch(address)
#else
#define PREFETCH(address) ((void)(address))
#endif

typedef struct {
    Py_ssize_t next; /* offset of the next cache line to prefetch */
} Prefetcher;

static inline void prefetch_to(Prefetcher *p, const uint8_t *buf, Py_ssize_t size, Py_ssize_t pos)
{
    Py_ssize_t end = pos + PREFETCH_DISTANCE < size ? pos + PREFETCH_DISTANCE : size;
    if (p->next < pos)
        p->next = pos;
    for (; p->next < end; p->next += CACHE_LINE)
        PREFETCH(buf + p->next);
}

/* ------------------------------------------------------------------------- buffers */

enum { KIND_INT = 'i', KIND_FLOAT = 'f', KIND_BOOL = 'b' };
#define MAX_BUFFERS 16

typedef struct {
    Py_buffer views[MAX_BUFFERS];
    int held;
} Buffers;

static int format_kind(const char *format)
{
    const char *code = format ? format : "B";
    while (*code && strchr("@=<>!", *code))
        code++;
    if (*code && strchr("bBhHiIlLqQnN", *code))
        return *code == 'b' || *code == 'B' ? KIND_BOOL | (KIND_INT << 8) : KIND_INT;
    if (*code == '?')
        return KIND_BOOL;
    if (*code == 'd')
        return KIND_FLOAT;
    return 0;
}

/* Takes a C-contiguous buffer of `itemsize`-byte items of `kind`; kind 0 = raw bytes. */
static Py_buffer *take(Buffers *bufs, PyObject *obj, int writable, int kind, Py_ssize_t itemsize,
                       const char *name)
{
    Py_buffer *view = &bufs->views[bufs->held];
    int flags = PyBUF_C_CONTIGUOUS | (kind ? PyBUF_FORMAT : 0) | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0)
        return NULL;
    bufs->held++;
    if (kind) {
        int found = format_kind(view->format);
        int matches = (found & 0xFF) == kind || (found >> 8) == kind;
        if (!matches || view->itemsize != itemsize) {
            PyErr_Format(PyExc_TypeError, "%s: expected %zd-byte %s items, got format '%s'",
                         name, itemsize, kind == KIND_FLOAT ? "float" : kind == KIND_BOOL ? "bool" : "int",
                         view->format ? view->format : "B");
            return NULL;
        }
    }
    return view;
}

static void release(Buffers *bufs)
{
    while (bufs->held > 0)
        PyBuffer_Release(&bufs->views[--bufs->held]);
}

static Py_ssize_t items(const Py_buffer *view)
{
    return view->len / view->itemsize;
}

/* ------------------------------------------------------------------------- record columns */

typedef struct {
    int64_t *data_offset, *caplen, *wirelen, *ts_ns, *linktype;
    Py_ssize_t capacity, count;
} Records;

static int take_records(Buffers *bufs, PyObject *const *outs, int n_outs, Records *rec)
{
    static const char *names[] = {"data_offset", "caplen", "wirelen", "ts_ns", "linktype"};
    int64_t **columns[] = {&rec->data_offset, &rec->caplen, &rec->wirelen, &rec->ts_ns,
                           &rec->linktype};
    rec->capacity = PY_SSIZE_T_MAX;
    rec->count = 0;
    rec->linktype = NULL;
    for (int i = 0; i < n_outs; i++) {
        Py_buffer *view = take(bufs, outs[i], 1, KIND_INT, 8, names[i]);
        if (view == NULL)
            return -1;
        *columns[i] = (int64_t *)view->buf;
        if (items(view) < rec->capacity)
            rec->capacity = items(view);
    }
    return 0;
}

static int check_capacity(const Records *rec, Py_ssize_t needed)
{
    if (rec->capacity >= needed)
        return 0;
    PyErr_Format(PyExc_ValueError, "output arrays hold %zd records, %zd may be needed",
                 rec->capacity, needed);
    return -1;
}

/* ------------------------------------------------------------------------- classic pcap */

enum { PCAP_RECORD_HEADER = 16, PCAP_CAPLEN_TOO_LARGE = 1 };

typedef struct {
    const uint8_t *buf;
    Py_ssize_t size;
    int big_endian;
    int64_t ns_per_tick, max_caplen;
} PcapInput;

/* Walks records from `pos`; returns where it stopped and sets *error. */
static Py_ssize_t pcap_records(const PcapInput *in, Py_ssize_t pos, Records *rec, int *error)
{
    Prefetcher ahead = {pos};
    *error = 0;
    while (pos + PCAP_RECORD_HEADER <= in->size) {
        const uint8_t *header = in->buf + pos;
        prefetch_to(&ahead, in->buf, in->size, pos);
        uint32_t caplen = read_u32(header + 8, in->big_endian);
        if ((int64_t)caplen > in->max_caplen) {
            *error = PCAP_CAPLEN_TOO_LARGE;
            break;
        }
        if (pos + PCAP_RECORD_HEADER + (Py_ssize_t)caplen > in->size)
            break;
        Py_ssize_t i = rec->count++;
        rec->data_offset[i] = pos + PCAP_RECORD_HEADER;
        rec->caplen[i] = caplen;
        rec->wirelen[i] = read_u32(header + 12, in->big_endian);
        rec->ts_ns[i] = (int64_t)read_u32(header, in->big_endian) * 1000000000 +
                        (int64_t)read_u32(header + 4, in->big_endian) * in->ns_per_tick;
        pos += PCAP_RECORD_HEADER + caplen;
    }
    return pos;
}

PyDoc_STRVAR(walk_pcap_doc,
"walk_pcap(buf, start, big_endian, ns_per_tick, max_caplen, out_data_offset, out_caplen,\n"
"          out_wirelen, out_ts_ns) -> (count, stop, error_code)\n\n"
"Classic pcap records wholly inside buf from offset start, written to the int64 output arrays\n"
"(capacity (len(buf) - start) // 16 + 1). Stops at a partial record (error_code 0) or at a\n"
"record whose caplen exceeds max_caplen (error_code 1, stop at its header).");

static PyObject *walk_pcap(PyObject *self, PyObject *args)
{
    PyObject *buf_obj, *outs[4];
    Py_ssize_t start;
    int big_endian;
    long long ns_per_tick, max_caplen;
    if (!PyArg_ParseTuple(args, "OnpLLOOOO:walk_pcap", &buf_obj, &start, &big_endian,
                          &ns_per_tick, &max_caplen, &outs[0], &outs[1], &outs[2], &outs[3]))
        return NULL;
    Buffers bufs = {.held = 0};
    Records rec;
    Py_buffer *buf = take(&bufs, buf_obj, 0, 0, 1, "buf");
    if (buf == NULL || take_records(&bufs, outs, 4, &rec) < 0)
        goto fail;
    if (start < 0) {
        PyErr_SetString(PyExc_ValueError, "start is negative");
        goto fail;
    }
    if (check_capacity(&rec, (buf->len - start) / PCAP_RECORD_HEADER + 1) < 0)
        goto fail;
    PcapInput in = {buf->buf, buf->len, big_endian, ns_per_tick, max_caplen};
    int error;
    Py_ssize_t stop;
    Py_BEGIN_ALLOW_THREADS
    stop = pcap_records(&in, start, &rec, &error);
    Py_END_ALLOW_THREADS
    release(&bufs);
    return Py_BuildValue("nni", rec.count, stop, error);
fail:
    release(&bufs);
    return NULL;
}

/* ------------------------------------------------------------------------- pcapng */

enum {
    BT_OPB = 2, BT_SPB = 3, BT_EPB = 6, BT_SHB = 0x0A0D0D0A,
    BLOCK_OVERHEAD = 12,  /* type, length, trailing length */
    PACKET_FIELDS = 20,   /* fixed EPB/OPB fields before the packet data */
    SPB_FIELDS = 4,       /* the SPB's original length */
};

/* One row of the interface table the Python side passes (int64 columns, in this order). */
enum { IF_LINKTYPE, IF_SNAPLEN, IF_BASE, IF_EXPONENT, IF_OFFSET_NS, IF_USABLE, IF_COLUMNS };

typedef struct {
    const uint8_t *buf;
    Py_ssize_t size;
    int big_endian;
    const int64_t *interfaces;
    Py_ssize_t n_interfaces;
    int64_t max_caplen, max_block;
} PcapngInput;

typedef struct {
    uint64_t hi, lo;
} U128;

static U128 multiply(uint64_t a, uint32_t b)
{
    uint64_t low = (a & 0xFFFFFFFFu) * b, high = (a >> 32) * b;
    U128 r;
    r.lo = low + (high << 32);
    r.hi = (high >> 32) + (r.lo < low);
    return r;
}

static U128 shift_right(U128 x, unsigned s)
{
    U128 r = {0, 0};
    if (s == 0)
        return x;
    if (s < 64) {
        r.lo = x.lo >> s | x.hi << (64 - s);
        r.hi = x.hi >> s;
    } else if (s < 128) {
        r.lo = x.hi >> (s - 64);
    }
    return r;
}

static const uint64_t POWERS_OF_TEN[20] = {
    1ull, 10ull, 100ull, 1000ull, 10000ull, 100000ull, 1000000ull, 10000000ull, 100000000ull,
    1000000000ull, 10000000000ull, 100000000000ull, 1000000000000ull, 10000000000000ull,
    100000000000000ull, 1000000000000000ull, 10000000000000000ull, 100000000000000000ull,
    1000000000000000000ull, 10000000000000000000ull,
};

/* _Interface.to_ns plus the offset, clamped to int64 as clamp_ns does. Returns 0 when the exact
 * value needs more than 64 bits before the offset is added (Python handles that block). */
static int timestamp_ns(const int64_t *iface, uint64_t units, int64_t *out)
{
    int64_t exponent = iface[IF_EXPONENT], offset = iface[IF_OFFSET_NS];
    uint64_t value;
    if (iface[IF_BASE] == 10 && exponent > 9) {
        value = exponent - 9 >= 20 ? 0 : units / POWERS_OF_TEN[exponent - 9];
    } else {
        U128 ns = iface[IF_BASE] == 10 ? multiply(units, (uint32_t)POWERS_OF_TEN[9 - exponent])
                                       : shift_right(multiply(units, 1000000000u), (unsigned)exponent);
        if (ns.hi || ns.lo > INT64_MAX)
            return 0;
        value = ns.lo;
    }
    *out = offset > 0 && (int64_t)value > INT64_MAX - offset ? INT64_MAX : (int64_t)value + offset;
    return 1;
}

typedef struct {
    int64_t data_offset, caplen, wirelen, ts_ns, linktype;
} Packet;

/* An EPB or OPB the Python walker would accept; 0 otherwise (Python then handles it). */
static int full_packet(const PcapngInput *in, const uint8_t *body, Py_ssize_t body_len,
                       uint32_t iface_id, Packet *pkt)
{
    if (body_len < PACKET_FIELDS || (Py_ssize_t)iface_id >= in->n_interfaces)
        return 0;
    const int64_t *iface = in->interfaces + (Py_ssize_t)iface_id * IF_COLUMNS;
    uint64_t units = (uint64_t)read_u32(body + 4, in->big_endian) << 32 |
                     read_u32(body + 8, in->big_endian);
    pkt->caplen = read_u32(body + 12, in->big_endian);
    pkt->wirelen = read_u32(body + 16, in->big_endian);
    pkt->linktype = iface[IF_LINKTYPE];
    if (pkt->caplen > body_len - PACKET_FIELDS || pkt->caplen > in->max_caplen)
        return 0;
    return iface[IF_USABLE] && timestamp_ns(iface, units, &pkt->ts_ns);
}

static int64_t smallest(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

static int simple_packet(const PcapngInput *in, const uint8_t *body, Py_ssize_t body_len,
                         Packet *pkt)
{
    if (body_len < SPB_FIELDS || in->n_interfaces == 0)
        return 0;
    int64_t snaplen = in->interfaces[IF_SNAPLEN] ? in->interfaces[IF_SNAPLEN] : in->max_caplen;
    pkt->wirelen = read_u32(body, in->big_endian);
    pkt->caplen = smallest(smallest(pkt->wirelen, body_len - SPB_FIELDS),
                           smallest(snaplen, in->max_caplen));
    pkt->ts_ns = 0;
    pkt->linktype = in->interfaces[IF_LINKTYPE];
    return 1;
}

static int packet_block(const PcapngInput *in, Py_ssize_t pos, uint32_t type, uint32_t length,
                        Packet *pkt)
{
    const uint8_t *body = in->buf + pos + 8;
    Py_ssize_t body_len = (Py_ssize_t)length - BLOCK_OVERHEAD;
    pkt->data_offset = pos + 8 + (type == BT_SPB ? SPB_FIELDS : PACKET_FIELDS);
    if (type == BT_EPB)
        return full_packet(in, body, body_len, read_u32(body, in->big_endian), pkt);
    if (type == BT_OPB)
        return full_packet(in, body, body_len, read_u16(body, in->big_endian), pkt);
    return type == BT_SPB && simple_packet(in, body, body_len, pkt);
}

/* Walks packet blocks from `pos`; stops at the first block it does not fully handle. */
static Py_ssize_t pcapng_packets(const PcapngInput *in, Py_ssize_t pos, Records *rec)
{
    Prefetcher ahead = {pos};
    while (pos + BLOCK_OVERHEAD <= in->size) {
        prefetch_to(&ahead, in->buf, in->size, pos);
        uint32_t type = read_u32(in->buf + pos, in->big_endian);
        uint32_t length = read_u32(in->buf + pos + 4, in->big_endian);
        if (type == BT_SHB || length < BLOCK_OVERHEAD || length % 4 || length > in->max_block ||
            pos + (Py_ssize_t)length > in->size ||
            read_u32(in->buf + pos + length - 4, in->big_endian) != length)
            break;
        Packet pkt;
        if (!packet_block(in, pos, type, length, &pkt))
            break;
        Py_ssize_t i = rec->count++;
        rec->data_offset[i] = pkt.data_offset;
        rec->caplen[i] = pkt.caplen;
        rec->wirelen[i] = pkt.wirelen;
        rec->ts_ns[i] = pkt.ts_ns;
        rec->linktype[i] = pkt.linktype;
        pos += length;
    }
    return pos;
}

PyDoc_STRVAR(walk_pcapng_doc,
"walk_pcapng(buf, start, big_endian, interfaces, max_caplen, max_block, out_data_offset,\n"
"            out_caplen, out_wirelen, out_ts_ns, out_linktype) -> (count, stop)\n\n"
"pcapng packet blocks (EPB, SPB, OPB) of already described interfaces from offset start.\n"
"interfaces: int64 array [n, 6] of linktype, snaplen, resolution base, resolution exponent,\n"
"offset_ns, usable (0 when offset_ns did not fit in int64). Stops, without consuming it, at the\n"
"first block that is not such a packet block or is damaged or partial, so that Python handles\n"
"it. Output arrays: int64, capacity (len(buf) - start) // 16 + 1.");

static PyObject *walk_pcapng(PyObject *self, PyObject *args)
{
    PyObject *buf_obj, *iface_obj, *outs[5];
    Py_ssize_t start;
    int big_endian;
    long long max_caplen, max_block;
    if (!PyArg_ParseTuple(args, "OnpOLLOOOOO:walk_pcapng", &buf_obj, &start, &big_endian,
                          &iface_obj, &max_caplen, &max_block, &outs[0], &outs[1], &outs[2],
                          &outs[3], &outs[4]))
        return NULL;
    Buffers bufs = {.held = 0};
    Records rec;
    Py_buffer *buf = take(&bufs, buf_obj, 0, 0, 1, "buf");
    Py_buffer *ifaces = buf ? take(&bufs, iface_obj, 0, KIND_INT, 8, "interfaces") : NULL;
    if (ifaces == NULL || take_records(&bufs, outs, 5, &rec) < 0)
        goto fail;
    if (start < 0 || items(ifaces) % IF_COLUMNS) {
        PyErr_SetString(PyExc_ValueError, "negative start or bad interface table");
        goto fail;
    }
    if (check_capacity(&rec, (buf->len - start) / 16 + 1) < 0)
        goto fail;
    PcapngInput in = {buf->buf, buf->len, big_endian, ifaces->buf, items(ifaces) / IF_COLUMNS,
                      max_caplen, max_block};
    Py_ssize_t stop;
    Py_BEGIN_ALLOW_THREADS
    stop = pcapng_packets(&in, start, &rec);
    Py_END_ALLOW_THREADS
    release(&bufs);
    return Py_BuildValue("nn", rec.count, stop);
fail:
    release(&bufs);
    return NULL;
}

/* ------------------------------------------------------------------------- RTP statistics */

#define SEQ_MODULUS 65536
#define SEQ_WRAP_GAP 0xFF00
#define SEQ_UNWRAP_HALF 0x8000
#define DUPLICATE_WINDOW 65536 /* extended sequence numbers remembered below the highest */
#define TS_HALF 0x80000000u
#define PAYLOAD_TYPES 128

typedef struct {
    int64_t count;
    double mean, maximum, minimum;
} RunningMean;

/* Everything tshark's rtppacket_analyse carries for one stream, plus our ordering counters.
 * All fields are 8 bytes wide, so the layout has no padding. */
typedef struct {
    int64_t packets, first_frame, last_frame, rtp_bytes;
    int64_t first_timestamp, start_seq, stop_seq, highest_seq, previous_pt, clock_rate;
    int64_t latched, cycles, sequence_errors, problem;
    int64_t last_extended, highest_extended, duplicates, out_of_order;
    double first_seen, last_seen, time_ms, last_nominal_ms, jitter;
    RunningMean delta, jitter_stats;
    uint64_t payload_types[PAYLOAD_TYPES / 64];
    uint64_t seen[DUPLICATE_WINDOW / 64]; /* bit (e mod 65536) for e in the window */
} RtpState;

typedef struct {
    int64_t frame, sequence_number, timestamp, payload_type, marker, rtp_bytes;
    double arrival_s;
} RtpPacket;

static int is_comfort_noise(int64_t payload_type)
{
    return payload_type == 13 || payload_type == 19;
}

static void running_add(RunningMean *r, double value, int64_t index)
{
    r->mean = (r->mean * (double)(index - 1) + value) / (double)index;
    if (r->count == 0 || value < r->minimum)
        r->minimum = value;
    if (value > r->maximum)
        r->maximum = value;
    r->count++;
}

static void set_seen(RtpState *s, int64_t extended)
{
    uint64_t bit = (uint64_t)extended & 0xFFFF;
    s->seen[bit >> 6] |= 1ull << (bit & 63);
}

static int was_seen(const RtpState *s, int64_t extended)
{
    uint64_t bit = (uint64_t)extended & 0xFFFF;
    return (s->seen[bit >> 6] >> (bit & 63)) & 1;
}

/* Clears the bits of `count` consecutive extended numbers from `first` (they left the window). */
static void forget_seen(RtpState *s, int64_t first, int64_t count)
{
    if (count >= DUPLICATE_WINDOW) {
        memset(s->seen, 0, sizeof s->seen);
        return;
    }
    while (count > 0) {
        uint64_t bit = (uint64_t)first & 0xFFFF, shift = bit & 63;
        int64_t span = smallest(64 - (int64_t)shift, count);
        uint64_t mask = span == 64 ? ~0ull : ((1ull << span) - 1) << shift;
        s->seen[bit >> 6] &= ~mask;
        first += span;
        count -= span;
    }
}

static void rtp_first(RtpState *s, const RtpPacket *p)
{
    s->packets = 1;
    s->first_seen = s->last_seen = p->arrival_s;
    s->first_frame = s->last_frame = p->frame;
    s->rtp_bytes = p->rtp_bytes;
    s->first_timestamp = p->timestamp;
    s->start_seq = s->stop_seq = s->highest_seq = p->sequence_number;
    s->previous_pt = p->payload_type;
    s->last_extended = s->highest_extended = p->sequence_number;
    set_seen(s, p->sequence_number);
}

/* tshark's wrap cycles (with its latch) and sequence errors. */
static void rtp_sequence(RtpState *s, int64_t seq, int in_time)
{
    if (in_time && !s->latched &&
        (seq < s->start_seq || (seq == 0 && s->stop_seq == SEQ_MODULUS - 1))) {
        s->cycles++;
        s->latched = 1;
    } else if (in_time && s->latched && seq > s->start_seq) {
        s->latched = 0;
    }
    int wrapped = in_time && s->highest_seq == SEQ_MODULUS - 1 && seq == 0;
    if ((seq <= s->highest_seq && !wrapped) || (in_time && seq > s->highest_seq + 1)) {
        s->sequence_errors++;
        s->problem = 1;
    }
    if (in_time && (seq > s->highest_seq || s->highest_seq - seq > SEQ_WRAP_GAP))
        s->highest_seq = seq;
}

/* RFC 3550 jitter and tshark's delta, over packets in time sequence. */
static void rtp_timing(RtpState *s, const int64_t *rates, const RtpPacket *p, int64_t index,
                       uint32_t forward, int in_time)
{
    double arrival_ms = (p->arrival_s - s->first_seen) * 1000.0;
    double delta = arrival_ms - s->time_ms;
    int64_t rate = rates[p->payload_type], ticks_per_ms = rate / 1000;
    int jittered = in_time && ticks_per_ms > 0;
    if (jittered) {
        double nominal = (double)forward / (double)ticks_per_ms;
        double change = fabs(arrival_ms - (s->time_ms + (nominal - s->last_nominal_ms)));
        s->jitter = (15.0 * s->jitter + change) / 16.0;
        s->last_nominal_ms = nominal;
        s->clock_rate = rate;
    }
    int regular = in_time && !p->marker && !is_comfort_noise(p->payload_type) &&
                  !is_comfort_noise(s->previous_pt);
    if (regular)
        running_add(&s->delta, delta, index);
    if (regular && jittered)
        running_add(&s->jitter_stats, s->jitter, index);
    if (in_time)
        s->time_ms = arrival_ms;
    else
        s->problem = 1;
}

/* Duplicates and out-of-order packets by extended sequence number (bounded window). */
static void rtp_ordering(RtpState *s, int64_t seq)
{
    int64_t step = seq - (s->last_extended & 0xFFFF);
    if (step > SEQ_UNWRAP_HALF)
        step -= SEQ_MODULUS;
    else if (step < -SEQ_UNWRAP_HALF)
        step += SEQ_MODULUS;
    int64_t extended = s->last_extended + step;
    s->last_extended = extended;
    if (extended > s->highest_extended) {
        forget_seen(s, s->highest_extended + 1, extended - s->highest_extended);
        s->highest_extended = extended;
        set_seen(s, extended);
    } else if (extended > s->highest_extended - DUPLICATE_WINDOW && was_seen(s, extended)) {
        s->duplicates++;
    } else {
        s->out_of_order++;
        if (extended > s->highest_extended - DUPLICATE_WINDOW)
            set_seen(s, extended);
    }
}

static void rtp_packet(RtpState *s, const int64_t *rates, const RtpPacket *p)
{
    s->payload_types[p->payload_type >> 6] |= 1ull << (p->payload_type & 63);
    if (s->packets == 0) {
        rtp_first(s, p);
        return;
    }
    uint32_t forward = (uint32_t)(p->timestamp - s->first_timestamp);
    int in_time = forward < TS_HALF || (p->timestamp < s->first_timestamp && forward == TS_HALF);
    rtp_sequence(s, p->sequence_number, in_time);
    rtp_timing(s, rates, p, s->packets, forward, in_time);
    rtp_ordering(s, p->sequence_number);
    s->packets++;
    s->stop_seq = p->sequence_number;
    s->previous_pt = p->payload_type;
    s->last_seen = p->arrival_s;
    s->last_frame = p->frame;
    s->rtp_bytes += p->rtp_bytes;
}

enum { COL_STREAM, COL_FRAME, COL_ARRIVAL, COL_SEQ, COL_TS, COL_PT, COL_MARKER, COL_BYTES, N_COLS };

typedef struct {
    RtpState *states;
    const int64_t *rates;
    const void *cols[N_COLS];
    Py_ssize_t n_packets;
} RtpBatch;

static RtpPacket batch_packet(const RtpBatch *b, Py_ssize_t i)
{
    RtpPacket p;
    p.frame = ((const int64_t *)b->cols[COL_FRAME])[i];
    p.arrival_s = ((const double *)b->cols[COL_ARRIVAL])[i];
    p.sequence_number = ((const int64_t *)b->cols[COL_SEQ])[i] & 0xFFFF;
    p.timestamp = ((const int64_t *)b->cols[COL_TS])[i] & 0xFFFFFFFF;
    p.payload_type = ((const int64_t *)b->cols[COL_PT])[i] & 0x7F;
    p.marker = ((const uint8_t *)b->cols[COL_MARKER])[i] != 0;
    p.rtp_bytes = ((const int64_t *)b->cols[COL_BYTES])[i];
    return p;
}

static void rtp_batch(const RtpBatch *b)
{
    const int64_t *stream = b->cols[COL_STREAM];
    for (Py_ssize_t i = 0; i < b->n_packets; i++) {
        RtpPacket p = batch_packet(b, i);
        rtp_packet(&b->states[stream[i]], b->rates + stream[i] * PAYLOAD_TYPES, &p);
    }
}

static int check_streams(const int64_t *stream, Py_ssize_t n, Py_ssize_t n_streams)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        if (stream[i] < 0 || stream[i] >= n_streams) {
            PyErr_Format(PyExc_IndexError, "stream index %lld out of range (%zd streams)",
                         (long long)stream[i], n_streams);
            return -1;
        }
    }
    return 0;
}

static int take_columns(Buffers *bufs, PyObject *const *objs, RtpBatch *b)
{
    static const char *names[N_COLS] = {"stream_index", "frame", "arrival_s", "sequence_number",
                                        "timestamp", "payload_type", "marker", "rtp_bytes"};
    for (int c = 0; c < N_COLS; c++) {
        int kind = c == COL_ARRIVAL ? KIND_FLOAT : c == COL_MARKER ? KIND_BOOL : KIND_INT;
        Py_buffer *view = take(bufs, objs[c], 0, kind, kind == KIND_BOOL ? 1 : 8, names[c]);
        if (view == NULL)
            return -1;
        if (c > 0 && items(view) != b->n_packets) {
            PyErr_Format(PyExc_ValueError, "%s has %zd items, stream_index %zd", names[c],
                         items(view), b->n_packets);
            return -1;
        }
        b->n_packets = items(view);
        b->cols[c] = view->buf;
    }
    return 0;
}

PyDoc_STRVAR(rtp_update_doc,
"rtp_update(state, clock_rates, stream_index, frame, arrival_s, sequence_number, timestamp,\n"
"           payload_type, marker, rtp_bytes) -> None\n\n"
"Feeds packets of many streams, in capture order, to tshark's per-packet RTP analysis.\n"
"state: writable buffer of n_streams rows of RTP_STATE_SIZE bytes (zeroed = no packet yet);\n"
"clock_rates: int64 [n_streams, 128], Hz per payload type (0 = no jitter); stream_index,\n"
"frame, sequence_number, timestamp, payload_type, rtp_bytes: int64; arrival_s: float64 epoch\n"
"seconds; marker: bool.");

static PyObject *rtp_update(PyObject *self, PyObject *args)
{
    PyObject *state_obj, *rates_obj, *objs[N_COLS];
    if (!PyArg_ParseTuple(args, "OOOOOOOOOO:rtp_update", &state_obj, &rates_obj, &objs[0],
                          &objs[1], &objs[2], &objs[3], &objs[4], &objs[5], &objs[6], &objs[7]))
        return NULL;
    Buffers bufs = {.held = 0};
    RtpBatch b = {.n_packets = 0};
    Py_buffer *state = take(&bufs, state_obj, 1, 0, 1, "state");
    Py_buffer *rates = state ? take(&bufs, rates_obj, 0, KIND_INT, 8, "clock_rates") : NULL;
    if (rates == NULL || take_columns(&bufs, objs, &b) < 0)
        goto fail;
    Py_ssize_t n_streams = state->len / (Py_ssize_t)sizeof(RtpState);
    if (state->len % (Py_ssize_t)sizeof(RtpState) || items(rates) < n_streams * PAYLOAD_TYPES) {
        PyErr_SetString(PyExc_ValueError, "state or clock_rates has the wrong size");
        goto fail;
    }
    if (check_streams(b.cols[COL_STREAM], b.n_packets, n_streams) < 0)
        goto fail;
    b.states = state->buf;
    b.rates = rates->buf;
    Py_BEGIN_ALLOW_THREADS
    rtp_batch(&b);
    Py_END_ALLOW_THREADS
    release(&bufs);
    Py_RETURN_NONE;
fail:
    release(&bufs);
    return NULL;
}

/* ------------------------------------------------------------------------- module */

typedef struct {
    const char *name, *format;
    Py_ssize_t offset;
} Field;

#define INT_FIELD(f) {#f, "i8", offsetof(RtpState, f)}
#define FLOAT_FIELD(f) {#f, "f8", offsetof(RtpState, f)}
#define RUNNING_FIELDS(f)                                                                         \
    {#f "_count", "i8", offsetof(RtpState, f.count)},                                             \
    {#f "_mean", "f8", offsetof(RtpState, f.mean)},                                               \
    {#f "_max", "f8", offsetof(RtpState, f.maximum)},                                             \
    {#f "_min", "f8", offsetof(RtpState, f.minimum)}

static const Field STATE_FIELDS[] = {
    INT_FIELD(packets), INT_FIELD(first_frame), INT_FIELD(last_frame), INT_FIELD(rtp_bytes),
    INT_FIELD(first_timestamp), INT_FIELD(start_seq), INT_FIELD(stop_seq),
    INT_FIELD(highest_seq), INT_FIELD(previous_pt), INT_FIELD(clock_rate), INT_FIELD(latched),
    INT_FIELD(cycles), INT_FIELD(sequence_errors), INT_FIELD(problem), INT_FIELD(last_extended),
    INT_FIELD(highest_extended), INT_FIELD(duplicates), INT_FIELD(out_of_order),
    FLOAT_FIELD(first_seen), FLOAT_FIELD(last_seen), FLOAT_FIELD(time_ms),
    FLOAT_FIELD(last_nominal_ms), FLOAT_FIELD(jitter), RUNNING_FIELDS(delta),
    RUNNING_FIELDS(jitter_stats),
    {"payload_types", "(2,)u8", offsetof(RtpState, payload_types)},
    {"seen", "(1024,)u8", offsetof(RtpState, seen)},
};

static PyObject *state_layout(void)
{
    Py_ssize_t n = sizeof STATE_FIELDS / sizeof STATE_FIELDS[0];
    PyObject *layout = PyTuple_New(n);
    for (Py_ssize_t i = 0; layout && i < n; i++) {
        const Field *f = &STATE_FIELDS[i];
        PyObject *item = Py_BuildValue("ssn", f->name, f->format, f->offset);
        if (item == NULL) {
            Py_CLEAR(layout);
            break;
        }
        PyTuple_SET_ITEM(layout, i, item);
    }
    return layout;
}

static PyMethodDef methods[] = {
    {"walk_pcap", walk_pcap, METH_VARARGS, walk_pcap_doc},
    {"walk_pcapng", walk_pcapng, METH_VARARGS, walk_pcapng_doc},
    {"rtp_update", rtp_update, METH_VARARGS, rtp_update_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "analyzer._speedups",
    .m_doc = "C fast paths for confscope (see analyzer/speedups.py).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__speedups(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    PyObject *layout = state_layout();
    int failed = layout == NULL || PyModule_AddObjectRef(m, "RTP_STATE_LAYOUT", layout) < 0;
    Py_XDECREF(layout);
    if (failed ||
        PyModule_AddIntConstant(m, "API_VERSION", API_VERSION) < 0 ||
        PyModule_AddIntConstant(m, "RTP_STATE_SIZE", (long)sizeof(RtpState)) < 0 ||
        PyModule_AddIntConstant(m, "RTP_DUPLICATE_WINDOW", DUPLICATE_WINDOW) < 0 ||
        PyModule_AddIntConstant(m, "PCAP_CAPLEN_TOO_LARGE", PCAP_CAPLEN_TOO_LARGE) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
