/* Optional C fast paths for confscope's per-packet loops.
 *
 * 1. Capture record walkers (pcap, and pcapng packet blocks): bytes in, record columns out.
 * 2. tshark's per-packet RTP stream statistics for many streams at once, in capture order, with
 *    a fixed-size state row per stream.
 * 3. The link/IP/tunnel/transport header decoder of analyzer/packets.py (decode_batch).
 * 4. The Zoom layout classifier of analyzer/decode/zoom.py (zoom_columns).
 * 5. analyzer/packets.py's Gather reads: big-endian values at per-packet positions.
 * 6. The RTP/RTCP finder of analyzer/media.py (find_media): plain RTP, TURN, MS-TURN and Zoom
 *    encapsulations of UDP payloads, their RTP headers decoded, in one pass over their bytes.
 * 7. The flow keys of analyzer/flows.py (flow_keys).
 * 8. TLS ClientHellos and DNS messages (analyzer/decode/tls.py parse_client_hello, dns.py
 *    parse_dns), the usual well-formed ones; Python reads anything else.
 * 9. Guarded file mappings (analyzer/capture/reader.py): a page of a mapped capture that the
 *    file cannot give (it shrank while being read, or a read failed) reads as zeros instead of
 *    killing the process with SIGBUS; the reader reports it as damage.
 *
 * The Python code (analyzer/capture/formats.py, analyzer/rtpstats.py, analyzer/packets.py,
 * analyzer/decode/zoom.py, analyzer/media.py, analyzer/flows.py, analyzer/decode/tls.py and
 * dns.py) is the reference and the fallback, and the tests hold both to the same outputs;
 * analyzer/speedups.py wraps this module. Only the CPython C API is used: arrays come in
 * through the buffer protocol (numpy arrays allocated by the Python side), no numpy headers.
 * The GIL is released while the array loops run (not while 8 makes Python objects).
 */
#define PY_SSIZE_T_CLEAN
/* Bumped with any change of a function's arguments or results; analyzer/speedups.py ignores a
 * build of another version (a stale in-place build after an edit). */
#define API_VERSION 8
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
#define MAX_BUFFERS 32

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
    if (bufs->held == MAX_BUFFERS) {
        PyErr_SetString(PyExc_SystemError, "_speedups: MAX_BUFFERS is too small");
        return NULL;
    }
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
#define SEEN_WORDS 64 /* the duplicate window's bits, 64 to a word */
/* extended sequence numbers remembered below the highest: bit e mod DUPLICATE_WINDOW stands for
 * e (a power of two) */
#define DUPLICATE_WINDOW (SEEN_WORDS * 64)
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
    uint64_t seen[SEEN_WORDS]; /* bit (e mod DUPLICATE_WINDOW) for e in the window */
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
    uint64_t bit = (uint64_t)extended & (DUPLICATE_WINDOW - 1);
    s->seen[bit >> 6] |= 1ull << (bit & 63);
}

static int was_seen(const RtpState *s, int64_t extended)
{
    uint64_t bit = (uint64_t)extended & (DUPLICATE_WINDOW - 1);
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
        uint64_t bit = (uint64_t)first & (DUPLICATE_WINDOW - 1), shift = bit & 63;
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

/* ------------------------------------------------------------------------- packet headers */

/* analyzer/packets.py's decode_batch one packet at a time, with the same rules in the same
 * order. Every read goes through the clamp of its numpy gathers (a position outside the batch
 * buffer reads the buffer's first or last byte), so the columns agree on any bytes. */

enum { /* LINKTYPE_* (tcpdump.org/linktypes.html) */
    LT_NULL = 0, LT_ETHERNET = 1, LT_DLT_RAW_BSD = 12, LT_DLT_RAW_OPENBSD = 14, LT_RAW = 101,
    LT_LOOP = 108, LT_LINUX_SLL = 113, LT_IPV4 = 228, LT_IPV6 = 229, LT_LINUX_SLL2 = 276,
};

enum { /* ethertypes and PPP protocol numbers */
    ET_IPV4 = 0x0800, ET_IPV6 = 0x86DD, ET_VLAN = 0x8100, ET_QINQ = 0x88A8, ET_QINQ_OLD = 0x9100,
    ET_MPLS = 0x8847, ET_MPLS_MULTICAST = 0x8848, ET_PPPOE = 0x8864, ET_TEB = 0x6558,
    ET_PPP = 0x880B, PPP_IPV4 = 0x0021, PPP_IPV6 = 0x0057, ETHERNET_MAX_LENGTH = 1500,
};

enum { PROTO_TCP = 6, PROTO_UDP = 17, PROTO_GRE = 47, IPV6_FRAGMENT = 44, IPV6_AH = 51,
       IPV6_NO_NEXT = 59, GTPU_PORT = 2152, VXLAN_PORT = 4789 };
enum { TUNNEL_NONE, TUNNEL_GRE, TUNNEL_GTPU, TUNNEL_VXLAN };
enum { MAX_TUNNEL_DEPTH = 3, MAX_LINK_HEADERS = 8, MAX_EXTENSION_HEADERS = 8,
       MAX_GTPU_EXTENSIONS = 4 };

/* Header layouts: offsets of the fields read, header lengths. */
enum { ETH_TYPE_AT = 12, ETH_HEADER = 14, SNAP_SSAP_AT = 4, SNAP_TYPE_AT = 6, SNAP_HEADER = 8 };
#define LLC_SNAP_IP 0xAAAA0300u /* DSAP, SSAP, control, then a zero OUI: an ethertype follows */
enum { VLAN_TYPE_AT = 2, VLAN_TAG = 4, MPLS_BOTTOM_AT = 2, MPLS_LABEL = 4 };
enum { PPPOE_VER_TYPE = 0x11, PPPOE_PPP_PROTOCOL_AT = 6, PPPOE_HEADER = 8 /* with PPP's */ };
enum { PPP_ADDRESS_CONTROL = 0xFF03 };
enum { SLL_PROTOCOL_AT = 14, SLL_HEADER = 16, SLL2_PROTOCOL_AT = 0, SLL2_HEADER = 20 };
enum { LOOPBACK_HEADER = 4, AF_INET_ALL = 2 };
enum { IPV4_TOTAL_LENGTH_AT = 2, IPV4_FLAGS_FRAGMENT_AT = 6, IPV4_PROTOCOL_AT = 9,
       IPV4_SRC_AT = 12, IPV4_DST_AT = 16, IPV4_MIN = 20, IPV4_MF = 0x2000,
       IPV4_OFFSET_MASK = 0x1FFF };
#define IPV4_MAPPED (0xFFFFull << 32) /* ::ffff:a.b.c.d */
enum { IPV6_PAYLOAD_LENGTH_AT = 4, IPV6_NEXT_HEADER_AT = 6, IPV6_SRC_AT = 8, IPV6_DST_AT = 24,
       IPV6_HEADER = 40, IPV6_EXTENSION_LENGTH_AT = 1, IPV6_FRAGMENT_OFFSET_AT = 2,
       IPV6_FRAGMENT_OFFSET_OR_M = 0xFFF9 };
enum { UDP_LENGTH_AT = 4, UDP_HEADER = 8, TCP_SEQ_AT = 4, TCP_DATA_OFFSET_AT = 12,
       TCP_FLAGS_AT = 13, TCP_MIN = 20 };
enum { GRE_C = 0x8000, GRE_R = 0x4000, GRE_K = 0x2000, GRE_S = 0x1000, GRE_A = 0x0080,
       GRE_VERSION = 0x7, GRE_PROTOCOL_AT = 2, GRE_HEADER = 4, PPTP_GRE_HEADER = 8,
       GRE_OPTIONAL = 4 };
enum { GTPU_TYPE_AT = 1, GTPU_LENGTH_AT = 2, GTPU_NEXT_EXTENSION_AT = 11, GTPU_HEADER = 8,
       GTPU_OPTIONAL = 4, GTPU_G_PDU = 0xFF, GTPU_PT = 0x10, GTPU_E_S_PN = 0x07, GTPU_E = 0x04 };
enum { VXLAN_HEADER = 8, VXLAN_I_FLAG = 0x08 };

typedef struct {
    const uint8_t *buf;
    uint64_t size; /* 0: an empty buffer, whose reads give 0 */
} Bytes;

/* The numpy gathers' clamp: positions before the buffer read its first byte, positions past it
 * its last one (an empty buffer reads as zeros). */
static uint32_t clamped_byte(const Bytes *b, int64_t pos)
{
    if (b->size == 0)
        return 0;
    return pos < 0 ? b->buf[0] : b->buf[b->size - 1];
}

static inline uint32_t byte_at(const Bytes *b, int64_t pos)
{
    if ((uint64_t)pos >= b->size) /* also a negative position */
        return clamped_byte(b, pos);
    return b->buf[pos];
}

static inline uint32_t be16_at(const Bytes *b, int64_t pos)
{
    return byte_at(b, pos) << 8 | byte_at(b, pos + 1);
}

static inline uint32_t be32_at(const Bytes *b, int64_t pos)
{
    return be16_at(b, pos) << 16 | be16_at(b, pos + 2);
}

static inline uint64_t be64_at(const Bytes *b, int64_t pos)
{
    return (uint64_t)be32_at(b, pos) << 32 | be32_at(b, pos + 4);
}

static int64_t largest(int64_t a, int64_t b)
{
    return a > b ? a : b;
}

/* One PacketColumns row (the fields decoded from the bytes). */
typedef struct {
    uint64_t src_hi, src_lo, dst_hi, dst_lo;
    int64_t l3_offset, l4_offset, payload_offset, payload_len;
    int32_t sport, dport;
    uint32_t tcp_seq;
    uint8_t ip_version, ip_proto, fragment, later_fragment, tunnel, tcp_flags, payload_truncated;
} Headers;

static const Headers NO_HEADERS = {.sport = -1, .dport = -1};

typedef struct {
    int64_t l3;
    uint32_t ethertype; /* ET_IPV4, ET_IPV6 or 0 once the link chain is followed */
} Link;

/* Where a packet's current network header starts and where its bytes end (packets._Layer). */
typedef struct {
    Link link;
    int64_t end, wire_end;
} Layer;

/* ---------------------------------------------------------------- link layer */

static uint32_t ethertype_from_version(uint32_t first_byte)
{
    uint32_t version = first_byte >> 4;
    return version == 4 ? ET_IPV4 : version == 6 ? ET_IPV6 : 0;
}

static uint32_t ppp_ethertype(uint32_t protocol)
{
    return protocol == PPP_IPV4 ? ET_IPV4 : protocol == PPP_IPV6 ? ET_IPV6 : 0;
}

static int is_vlan(uint32_t ethertype)
{
    return ethertype == ET_VLAN || ethertype == ET_QINQ || ethertype == ET_QINQ_OLD;
}

static int is_pppoe_session(const Bytes *b, Link link)
{
    return link.ethertype == ET_PPPOE && byte_at(b, link.l3) == PPPOE_VER_TYPE &&
           byte_at(b, link.l3 + 1) == 0;
}

/* One VLAN tag, PPPoE session header or MPLS label; 0 when `link` is at none of them. */
static int link_step(const Bytes *b, Link *link)
{
    int64_t at = link->l3;
    if (is_vlan(link->ethertype)) {
        link->ethertype = be16_at(b, at + VLAN_TYPE_AT);
        link->l3 = at + VLAN_TAG;
    } else if (is_pppoe_session(b, *link)) {
        link->ethertype = ppp_ethertype(be16_at(b, at + PPPOE_PPP_PROTOCOL_AT));
        link->l3 = at + PPPOE_HEADER;
    } else if (link->ethertype == ET_MPLS || link->ethertype == ET_MPLS_MULTICAST) {
        if (byte_at(b, at + MPLS_BOTTOM_AT) & 1)
            link->ethertype = ethertype_from_version(byte_at(b, at + MPLS_LABEL));
        link->l3 = at + MPLS_LABEL;
    } else {
        return 0;
    }
    return 1;
}

/* VLAN tags (802.1Q, QinQ), PPPoE sessions and MPLS labels down to IP (packets._link_chain). */
static Link link_chain(const Bytes *b, Link link)
{
    for (int i = 0; i < MAX_LINK_HEADERS && link_step(b, &link); i++)
        ;
    if (link.ethertype != ET_IPV4 && link.ethertype != ET_IPV6)
        link.ethertype = 0;
    return link;
}

/* Ethernet II, or 802.3 with an LLC/SNAP header carrying an ethertype. */
static Link ethernet(const Bytes *b, int64_t start)
{
    Link link = {start + ETH_HEADER, be16_at(b, start + ETH_TYPE_AT)};
    if (link.ethertype <= ETHERNET_MAX_LENGTH && be32_at(b, link.l3) == LLC_SNAP_IP &&
        be16_at(b, link.l3 + SNAP_SSAP_AT) == 0) {
        link.ethertype = be16_at(b, link.l3 + SNAP_TYPE_AT);
        link.l3 += SNAP_HEADER;
    }
    return link_chain(b, link);
}

static Link cooked(const Bytes *b, int64_t start, int protocol_at, int header)
{
    Link link = {start + header, be16_at(b, start + protocol_at)};
    return link_chain(b, link);
}

/* DLT_NULL (host byte order address family) and DLT_LOOP (network order). */
static Link bsd_loopback(const Bytes *b, int64_t start)
{
    uint32_t family_be = be32_at(b, start);
    uint32_t family = family_be < 256 ? family_be
                                      : (family_be >> 24 | (family_be >> 8 & 0xFF00) |
                                         (family_be << 8 & 0xFF0000) | family_be << 24);
    int v6 = family == 10 || family == 23 || family == 24 || family == 28 || family == 30;
    Link link = {start + LOOPBACK_HEADER, family == AF_INET_ALL ? ET_IPV4 : v6 ? ET_IPV6 : 0};
    return link;
}

/* Raw IP: the version from the first nibble; LINKTYPE_IPV4/IPV6 admit only their version. */
static Link raw_ip(const Bytes *b, int64_t linktype, int64_t start)
{
    uint32_t ethertype = ethertype_from_version(byte_at(b, start));
    if ((linktype == LT_IPV4 && ethertype != ET_IPV4) ||
        (linktype == LT_IPV6 && ethertype != ET_IPV6))
        ethertype = 0;
    Link link = {start, ethertype};
    return link;
}

static Link link_layer(const Bytes *b, int64_t linktype, int64_t start, int64_t end)
{
    Link link = {start, 0};
    switch (linktype) {
    case LT_ETHERNET:
        link = ethernet(b, start);
        break;
    case LT_LINUX_SLL:
        link = cooked(b, start, SLL_PROTOCOL_AT, SLL_HEADER);
        break;
    case LT_LINUX_SLL2:
        link = cooked(b, start, SLL2_PROTOCOL_AT, SLL2_HEADER);
        break;
    case LT_RAW: case LT_IPV4: case LT_IPV6: case LT_DLT_RAW_BSD: case LT_DLT_RAW_OPENBSD:
        link = raw_ip(b, linktype, start);
        break;
    case LT_NULL: case LT_LOOP:
        link = bsd_loopback(b, start);
        break;
    }
    if (link.l3 >= end)
        link.ethertype = 0;
    return link;
}

/* ---------------------------------------------------------------- IP and transport */

/* 4 or 6 when the layer's IPv4 / IPv6 fixed header is present, of its version and sane. */
static int ip_header_ok(const Bytes *b, const Layer *layer)
{
    int64_t l3 = layer->link.l3;
    uint32_t first = byte_at(b, l3);
    if (layer->link.ethertype == ET_IPV4 && first >> 4 == 4 && (first & 0x0F) * 4 >= IPV4_MIN &&
        l3 + IPV4_MIN <= layer->end)
        return 4;
    if (layer->link.ethertype == ET_IPV6 && first >> 4 == 6 && l3 + IPV6_HEADER <= layer->end)
        return 6;
    return 0;
}

/* Returns where the IP packet ends as its header declares. */
static int64_t ipv4(const Bytes *b, const Layer *layer, Headers *h)
{
    int64_t base = layer->link.l3, ihl = (int64_t)(byte_at(b, base) & 0x0F) * 4;
    int64_t total = be16_at(b, base + IPV4_TOTAL_LENGTH_AT);
    uint32_t flags_fragment = be16_at(b, base + IPV4_FLAGS_FRAGMENT_AT);
    uint32_t offset = flags_fragment & IPV4_OFFSET_MASK;
    h->fragment = (flags_fragment & IPV4_MF) != 0 || offset != 0;
    h->later_fragment = offset != 0;
    h->ip_proto = (uint8_t)byte_at(b, base + IPV4_PROTOCOL_AT);
    h->l3_offset = base;
    h->src_lo = be32_at(b, base + IPV4_SRC_AT) | IPV4_MAPPED;
    h->dst_lo = be32_at(b, base + IPV4_DST_AT) | IPV4_MAPPED;
    h->l4_offset = base + ihl;
    /* total length 0: sent with TCP segmentation offload, the frame length is the truth */
    return total == 0 ? layer->wire_end : base + largest(total, ihl);
}

static int is_ipv6_extension(uint32_t next_header) /* length in 8-octet units, minus one */
{
    switch (next_header) {
    case 0: case 43: case 60: case 135: case 139: case 140: case 253: case 254:
        return 1;
    }
    return 0;
}

/* Length of the extension header `next_header` at `pos`; 0 when it is not one we walk. */
static int64_t ipv6_extension_length(const Bytes *b, uint32_t next_header, int64_t pos)
{
    int64_t length = byte_at(b, pos + IPV6_EXTENSION_LENGTH_AT);
    if (is_ipv6_extension(next_header))
        return (length + 1) * 8;
    if (next_header == IPV6_FRAGMENT)
        return 8;
    return next_header == IPV6_AH ? (length + 2) * 4 : 0;
}

/* Extension headers wholly inside the captured bytes (RFC 8200 §4); an atomic fragment (offset
 * 0, no M flag) is not a fragment. */
static void ipv6_extensions(const Bytes *b, uint32_t next_header, int64_t pos, int64_t stop,
                            Headers *h)
{
    for (int i = 0; i < MAX_EXTENSION_HEADERS; i++) {
        int64_t step = ipv6_extension_length(b, next_header, pos);
        if (step == 0 || pos + step > stop)
            break;
        if (next_header == IPV6_FRAGMENT) {
            uint32_t offset_flags = be16_at(b, pos + IPV6_FRAGMENT_OFFSET_AT);
            h->fragment |= (offset_flags & IPV6_FRAGMENT_OFFSET_OR_M) != 0;
            h->later_fragment |= (offset_flags >> 3) != 0;
        }
        next_header = byte_at(b, pos);
        pos += step;
    }
    h->ip_proto = (uint8_t)next_header;
    h->l4_offset = pos;
}

static int64_t ipv6(const Bytes *b, const Layer *layer, Headers *h)
{
    int64_t base = layer->link.l3, length = be16_at(b, base + IPV6_PAYLOAD_LENGTH_AT);
    uint32_t next_header = byte_at(b, base + IPV6_NEXT_HEADER_AT);
    h->l3_offset = base;
    h->src_hi = be64_at(b, base + IPV6_SRC_AT);
    h->src_lo = be64_at(b, base + IPV6_SRC_AT + 8);
    h->dst_hi = be64_at(b, base + IPV6_DST_AT);
    h->dst_lo = be64_at(b, base + IPV6_DST_AT + 8);
    /* payload length 0: a jumbogram or segmentation offload, the frame length is the truth */
    int64_t declared = length == 0 && next_header != IPV6_NO_NEXT ? layer->wire_end
                                                                  : base + IPV6_HEADER + length;
    ipv6_extensions(b, next_header, base + IPV6_HEADER, smallest(declared, layer->end), h);
    return declared;
}

/* TCP/UDP ports and payload bounds; returns where the payload ends as declared. */
static int64_t transport(const Bytes *b, Headers *h, int64_t ip_end, int64_t end)
{
    int64_t at = h->l4_offset, stop = smallest(ip_end, end); /* the captured IP packet */
    int udp = h->ip_proto == PROTO_UDP && at + UDP_HEADER <= stop;
    int tcp = h->ip_proto == PROTO_TCP && at + TCP_MIN <= stop;
    if (!udp && !tcp)
        return ip_end;
    int64_t payload_end = ip_end, header = UDP_HEADER;
    h->sport = (int32_t)be16_at(b, at);
    h->dport = (int32_t)be16_at(b, at + 2);
    if (udp) {
        int64_t length = be16_at(b, at + UDP_LENGTH_AT);
        payload_end = smallest(length == 0 ? ip_end : at + largest(length, UDP_HEADER), ip_end);
    } else {
        header = largest((int64_t)(byte_at(b, at + TCP_DATA_OFFSET_AT) >> 4) * 4, TCP_MIN);
        h->tcp_flags = (uint8_t)byte_at(b, at + TCP_FLAGS_AT);
        h->tcp_seq = be32_at(b, at + TCP_SEQ_AT);
    }
    h->payload_offset = smallest(at + header, stop);
    h->payload_len = largest(smallest(payload_end, stop) - h->payload_offset, 0);
    h->payload_truncated = payload_end > stop;
    return payload_end;
}

/* IP then TCP/UDP into `h`; returns where the IP payload ends as declared (0: not IP). */
static int64_t decode_network(const Bytes *b, const Layer *layer, Headers *h)
{
    int version = ip_header_ok(b, layer);
    if (version == 0)
        return 0;
    int64_t ip_end = version == 4 ? ipv4(b, layer, h) : ipv6(b, layer, h);
    h->ip_version = (uint8_t)version;
    return h->later_fragment ? ip_end : transport(b, h, ip_end, layer->end);
}

/* ---------------------------------------------------------------- tunnels */

/* PPP frame: optional ff 03 address/control, then a 1- or 2-byte protocol field. */
static Link ppp(const Bytes *b, int64_t at)
{
    if (be16_at(b, at) == PPP_ADDRESS_CONTROL)
        at += 2;
    uint32_t first = byte_at(b, at);
    int compressed = first & 1; /* protocol-field compression */
    Link link = {at + (compressed ? 1 : 2), ppp_ethertype(compressed ? first : be16_at(b, at))};
    return link;
}

static int64_t flag_words(uint32_t flags, uint32_t flag)
{
    return (flags & flag) ? 4 : 0;
}

/* GRE (RFC 2784/2890; RFC 2637 enhanced GRE for PPTP); source routing is not followed. */
static int gre(const Bytes *b, int64_t at, Layer *inner)
{
    uint32_t flags = be16_at(b, at), protocol = be16_at(b, at + GRE_PROTOCOL_AT);
    uint32_t version = flags & GRE_VERSION;
    int64_t l3 = at + GRE_HEADER + flag_words(flags, GRE_C) + flag_words(flags, GRE_K) +
                 flag_words(flags, GRE_S);
    int plain = version == 0 && !(flags & GRE_R);
    Link chain = {l3, plain ? protocol : 0};
    if (plain && protocol == ET_TEB)
        inner->link = ethernet(b, l3);
    else if (version == 1 && protocol == ET_PPP)
        inner->link = ppp(b, at + PPTP_GRE_HEADER + flag_words(flags, GRE_S) +
                                 flag_words(flags, GRE_A));
    else
        inner->link = link_chain(b, chain);
    return TUNNEL_GRE;
}

/* GTP-U (3GPP TS 29.281) G-PDU; extension headers: length in 4-octet units, next type last. */
static int gtpu(const Bytes *b, int64_t at, Layer *inner)
{
    uint32_t flags = byte_at(b, at);
    int64_t gtp_end = at + GTPU_HEADER + be16_at(b, at + GTPU_LENGTH_AT);
    int gpdu = flags >> 5 == 1 && (flags & GTPU_PT) && byte_at(b, at + GTPU_TYPE_AT) == GTPU_G_PDU;
    int64_t pos = at + GTPU_HEADER + ((flags & GTPU_E_S_PN) ? GTPU_OPTIONAL : 0);
    uint32_t next = (flags & GTPU_E) ? byte_at(b, at + GTPU_NEXT_EXTENSION_AT) : 0;
    for (int i = 0; i < MAX_GTPU_EXTENSIONS && next != 0; i++) {
        int64_t length = (int64_t)byte_at(b, pos) * 4;
        gpdu = gpdu && length > 0;
        next = length > 0 ? byte_at(b, pos + length - 1) : 0;
        pos += length;
    }
    gpdu = gpdu && next == 0;
    inner->link.l3 = pos;
    inner->link.ethertype = gpdu ? ethertype_from_version(byte_at(b, pos)) : 0;
    inner->end = smallest(inner->end, gtp_end);
    inner->wire_end = smallest(inner->wire_end, gtp_end);
    return gpdu ? TUNNEL_GTPU : TUNNEL_NONE;
}

/* VXLAN (RFC 7348): 8-byte header with the I flag, then an Ethernet frame. */
static int vxlan(const Bytes *b, int64_t at, Layer *inner)
{
    int valid = (byte_at(b, at) & VXLAN_I_FLAG) != 0;
    inner->link = ethernet(b, at + VXLAN_HEADER);
    if (!valid)
        inner->link.ethertype = 0;
    return valid ? TUNNEL_VXLAN : TUNNEL_NONE;
}

/* The tunnel kind of a decoded packet and its inner layer. A tunnel is removed only when its
 * inner IP header is wholly captured and sane; fragments are left alone. */
static int tunnel(const Bytes *b, const Layer *outer, int64_t declared_end, const Headers *h,
                  Layer *inner)
{
    Layer empty = {{0, 0}, smallest(declared_end, outer->end), declared_end};
    int kind = TUNNEL_NONE;
    *inner = empty;
    if (h->ip_version == 0 || h->fragment)
        return TUNNEL_NONE;
    if (h->ip_proto == PROTO_GRE)
        kind = gre(b, h->l4_offset, inner);
    else if (h->ip_proto == PROTO_UDP && h->sport >= 0 &&
             (h->dport == GTPU_PORT || h->sport == GTPU_PORT))
        kind = gtpu(b, h->payload_offset, inner);
    else if (h->ip_proto == PROTO_UDP && h->sport >= 0 && h->dport == VXLAN_PORT)
        kind = vxlan(b, h->payload_offset, inner);
    return ip_header_ok(b, inner) ? kind : TUNNEL_NONE;
}

typedef struct {
    int64_t start, caplen, wirelen, linktype;
} Frame;

static void decode_packet(const Bytes *b, const Frame *f, Headers *h)
{
    int64_t end = f->start + f->caplen;
    Layer layer = {link_layer(b, f->linktype, f->start, end), end,
                   f->start + largest(f->wirelen, f->caplen)};
    int outermost = TUNNEL_NONE;
    *h = NO_HEADERS;
    for (int depth = 0;; depth++) {
        int64_t declared_end = decode_network(b, &layer, h);
        if (depth == MAX_TUNNEL_DEPTH) /* deeper tunnels are left wrapped */
            break;
        Layer inner;
        int kind = tunnel(b, &layer, declared_end, h, &inner);
        if (depth == 0)
            outermost = kind;
        if (kind == TUNNEL_NONE)
            break;
        *h = NO_HEADERS; /* the outer headers are forgotten */
        layer = inner;
    }
    h->tunnel = (uint8_t)outermost;
}

/* ---------------------------------------------------------------- batch columns */

/* decode_headers' arguments: the batch's buffer and columns, then one output per field. */
enum { IN_DATA_OFFSET, IN_CAPLEN, IN_WIRELEN, IN_LINKTYPE, N_HEADER_INPUTS };
enum {
    HC_IP_VERSION, HC_SRC_HI, HC_SRC_LO, HC_DST_HI, HC_DST_LO, HC_IP_PROTO, HC_FRAGMENT,
    HC_LATER_FRAGMENT, HC_TUNNEL, HC_SPORT, HC_DPORT, HC_TCP_FLAGS, HC_TCP_SEQ, HC_L3_OFFSET,
    HC_L4_OFFSET, HC_PAYLOAD_OFFSET, HC_PAYLOAD_LEN, HC_PAYLOAD_TRUNCATED, N_HEADER_COLUMNS
};

typedef struct {
    const char *name;
    int kind;
    Py_ssize_t itemsize;
} ColumnSpec;

static const ColumnSpec HEADER_INPUTS[N_HEADER_INPUTS] = {
    {"data_offset", KIND_INT, 8}, {"caplen", KIND_INT, 8}, {"wirelen", KIND_INT, 8},
    {"linktype", KIND_INT, 4},
};

static const ColumnSpec HEADER_COLUMNS[N_HEADER_COLUMNS] = {
    {"ip_version", KIND_INT, 1}, {"src_hi", KIND_INT, 8}, {"src_lo", KIND_INT, 8},
    {"dst_hi", KIND_INT, 8}, {"dst_lo", KIND_INT, 8}, {"ip_proto", KIND_INT, 1},
    {"fragment", KIND_BOOL, 1}, {"later_fragment", KIND_BOOL, 1}, {"tunnel", KIND_INT, 1},
    {"sport", KIND_INT, 4}, {"dport", KIND_INT, 4}, {"tcp_flags", KIND_INT, 1},
    {"tcp_seq", KIND_INT, 4}, {"l3_offset", KIND_INT, 8}, {"l4_offset", KIND_INT, 8}, {"payload_offset", KIND_INT, 8},
    {"payload_len", KIND_INT, 8}, {"payload_truncated", KIND_BOOL, 1},
};

typedef struct {
    Bytes bytes;
    const int64_t *data_offset, *caplen, *wirelen;
    const int32_t *linktype;
    void *out[N_HEADER_COLUMNS];
    Py_ssize_t n_packets;
} HeaderBatch;

#define COLUMN(batch, index, type) ((type *)(batch)->out[index])

static void store_headers(const HeaderBatch *hb, Py_ssize_t i, const Headers *h)
{
    COLUMN(hb, HC_IP_VERSION, uint8_t)[i] = h->ip_version;
    COLUMN(hb, HC_SRC_HI, uint64_t)[i] = h->src_hi;
    COLUMN(hb, HC_SRC_LO, uint64_t)[i] = h->src_lo;
    COLUMN(hb, HC_DST_HI, uint64_t)[i] = h->dst_hi;
    COLUMN(hb, HC_DST_LO, uint64_t)[i] = h->dst_lo;
    COLUMN(hb, HC_IP_PROTO, uint8_t)[i] = h->ip_proto;
    COLUMN(hb, HC_FRAGMENT, uint8_t)[i] = h->fragment;
    COLUMN(hb, HC_LATER_FRAGMENT, uint8_t)[i] = h->later_fragment;
    COLUMN(hb, HC_TUNNEL, uint8_t)[i] = h->tunnel;
    COLUMN(hb, HC_SPORT, int32_t)[i] = h->sport;
    COLUMN(hb, HC_DPORT, int32_t)[i] = h->dport;
    COLUMN(hb, HC_TCP_FLAGS, uint8_t)[i] = h->tcp_flags;
    COLUMN(hb, HC_TCP_SEQ, uint32_t)[i] = h->tcp_seq;
    COLUMN(hb, HC_L3_OFFSET, int64_t)[i] = h->l3_offset;
    COLUMN(hb, HC_L4_OFFSET, int64_t)[i] = h->l4_offset;
    COLUMN(hb, HC_PAYLOAD_OFFSET, int64_t)[i] = h->payload_offset;
    COLUMN(hb, HC_PAYLOAD_LEN, int64_t)[i] = h->payload_len;
    COLUMN(hb, HC_PAYLOAD_TRUNCATED, uint8_t)[i] = h->payload_truncated;
}

/* Packets lie in the buffer in file order, hundreds of bytes apart: fetching the first two cache
 * lines of a packet some packets ahead hides much of the memory latency (about 1.5x faster than
 * no prefetching on 64 MiB batches of 750-byte packets; 8 and 32 packets ahead do less well). */
#define PACKETS_AHEAD 16
#define HEADER_SPAN 63 /* Ethernet, IPv4 and UDP headers may straddle two cache lines */

static void prefetch_packet(const HeaderBatch *hb, Py_ssize_t i)
{
    int64_t start = hb->data_offset[i];
    if (start >= 0 && (uint64_t)start + HEADER_SPAN < hb->bytes.size) {
        PREFETCH(hb->bytes.buf + start);
        PREFETCH(hb->bytes.buf + start + HEADER_SPAN);
    }
}

static void decode_headers_batch(const HeaderBatch *hb)
{
    for (Py_ssize_t i = 0; i < hb->n_packets; i++) {
        if (i + PACKETS_AHEAD < hb->n_packets)
            prefetch_packet(hb, i + PACKETS_AHEAD);
        Frame f = {hb->data_offset[i], hb->caplen[i], hb->wirelen[i], hb->linktype[i]};
        Headers h;
        decode_packet(&hb->bytes, &f, &h);
        store_headers(hb, i, &h);
    }
}

/* The argument count check of the fastcall kernels (-1 with TypeError when it is wrong). */
static int check_nargs(const char *name, Py_ssize_t nargs, Py_ssize_t expected)
{
    if (nargs == expected)
        return 0;
    PyErr_Format(PyExc_TypeError, "%s takes %zd arguments (%zd given)", name, expected, nargs);
    return -1;
}

/* Takes `count` buffers described by `specs`, all of `n` items (n = the first's when < 0). */
static int take_all(Buffers *bufs, PyObject *const *objs, const ColumnSpec *specs, int count,
                    int writable, Py_ssize_t *n, void **out)
{
    for (int c = 0; c < count; c++) {
        const ColumnSpec *spec = &specs[c];
        Py_buffer *view = take(bufs, objs[c], writable, spec->kind, spec->itemsize, spec->name);
        if (view == NULL)
            return -1;
        if (*n < 0)
            *n = items(view);
        if (items(view) != *n) {
            PyErr_Format(PyExc_ValueError, "%s has %zd items, expected %zd", spec->name,
                         items(view), *n);
            return -1;
        }
        out[c] = view->buf;
    }
    return 0;
}

PyDoc_STRVAR(decode_headers_doc,
"decode_headers(buffer, data_offset, caplen, wirelen, linktype, *outputs) -> None\n\n"
"analyzer.packets.decode_batch in C: link, IP, tunnel and transport headers of every packet of\n"
"a batch. buffer: the batch's bytes; data_offset, caplen, wirelen: int64; linktype: int32.\n"
"outputs: one preallocated array per decoded PacketColumns field, in HEADER_COLUMNS order\n"
"(ip_version u1, src_hi, src_lo, dst_hi, dst_lo u8, ip_proto u1, fragment, later_fragment\n"
"bool, tunnel u1, sport, dport i4, tcp_flags u1, tcp_seq u4, l3_offset, l4_offset,\n"
"payload_offset, payload_len i8, payload_truncated bool), each with one item per packet; all are written.");

static PyObject *decode_headers(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    enum { N_ARGS = 1 + N_HEADER_INPUTS + N_HEADER_COLUMNS };
    if (check_nargs("decode_headers", nargs, N_ARGS) < 0)
        return NULL;
    Buffers bufs = {.held = 0};
    void *in[N_HEADER_INPUTS];
    HeaderBatch hb = {.n_packets = -1};
    Py_buffer *buffer = take(&bufs, args[0], 0, 0, 1, "buffer");
    if (buffer == NULL ||
        take_all(&bufs, args + 1, HEADER_INPUTS, N_HEADER_INPUTS, 0, &hb.n_packets, in) < 0 ||
        take_all(&bufs, args + 1 + N_HEADER_INPUTS, HEADER_COLUMNS, N_HEADER_COLUMNS, 1,
                 &hb.n_packets, hb.out) < 0) {
        release(&bufs);
        return NULL;
    }
    hb.bytes.buf = buffer->buf;
    hb.bytes.size = (uint64_t)buffer->len;
    hb.data_offset = in[IN_DATA_OFFSET];
    hb.caplen = in[IN_CAPLEN];
    hb.wirelen = in[IN_WIRELEN];
    hb.linktype = in[IN_LINKTYPE];
    Py_BEGIN_ALLOW_THREADS
    decode_headers_batch(&hb);
    Py_END_ALLOW_THREADS
    release(&bufs);
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------- Zoom */

/* analyzer/decode/zoom.py's zoom_columns one row at a time: the SFU, P2P and legacy layout
 * candidates of each UDP payload head, then the per-row choice between them. */

enum { ZOOM_HEAD_BYTES = 64 };
enum { /* MEDIA_KINDS codes */
    MEDIA_UNKNOWN, MEDIA_AUDIO, MEDIA_VIDEO, MEDIA_SCREEN, MEDIA_RTCP, MEDIA_FEC, MEDIA_PROBE,
    MEDIA_SETUP, N_MEDIA_KINDS
};
static const char *const MEDIA_KIND_NAMES[N_MEDIA_KINDS] = {
    "unknown", "audio", "video", "screen", "rtcp", "fec", "probe", "setup",
};
enum { LAYOUT_NONE, LAYOUT_SFU, LAYOUT_P2P, LAYOUT_LEGACY };
enum { DIRECTION_NONE, DIRECTION_TO_SERVER, DIRECTION_FROM_SERVER };

/* §1.3 SFU encapsulation, §1.4 media encapsulation offsets (relative to its type byte). */
enum { SFU_MEDIA = 0x05, SFU_DIRECTION_AT = 7, SFU_HEADER_LENGTH = 8, LEGACY_PREFIX = 1 };
enum { NESTED_HEADER_AT = 7, VIDEO_FRAME_FLAG_AT = 20, VIDEO_RTP_AT = 20, VIDEO_FRAMED_RTP_AT = 24,
       P2P_SCREEN_RTP_AT = 20, RTCP_AT = 16, FILLER_MARKER_AT = 22, FILLER_MARKER = 0x03E8,
       SECOND_RTP_AT = 55, SECOND_RTP_FIRST_BYTE = 0x90, FEC_PAYLOAD_TYPE = 110 };
enum { SETUP_IP_LENGTH_AT = 24, SETUP_FIXED_LENGTH = 36 };
static const uint8_t SETUP_PREFIX[3] = {0x1F, 0x02, 0x01};
enum { /* media types */
    TYPE_RTP_1 = 1, TYPE_WRAPPER = 7, TYPE_TYPE_10 = 10, TYPE_CONTROL = 12,
    TYPE_SERVER_SCREEN = 13, TYPE_AUDIO = 15, TYPE_VIDEO = 16, TYPE_FILLER = 21,
    TYPE_P2P_SCREEN = 30, TYPE_SETUP = 31, TYPE_32 = 32, TYPE_RTCP = 33, TYPE_RTCP_SR_SDES = 34,
    TYPE_RTCP_35 = 35,
};
enum { RTP_TYPE_1_RTP_AT = 26, AUDIO_RTP_AT = 19 };
/* RTP plausibility (analyzer/decode/rtp.py, RFC 8285 profiles) */
enum { RTP_STATIC_PT_MAX = 34, RTP_DYNAMIC_PT_MIN = 96, ONE_BYTE_PROFILE = 0xBEDE,
       TWO_BYTE_PROFILE = 0x1000, TWO_BYTE_PROFILE_MASK = 0xFFF0, RTCP_PT_MIN = 200,
       RTCP_PT_END = 208 };

/* One layout candidate of one row (zoom._Cols). */
typedef struct {
    int ok, verified, rtcp;
    int media_type, kind;
    int64_t rtp, second;
} Candidate;

static const Candidate NO_CANDIDATE = {0, 0, 0, -1, -1, -1, -1};

typedef struct {
    const uint8_t *head; /* the row's first ZOOM_HEAD_BYTES bytes, zero-padded */
    int64_t length;      /* the payload's length */
} Payload;

static uint32_t head_be16(const Payload *p, int at)
{
    return (uint32_t)p->head[at] << 8 | p->head[at + 1];
}

static uint32_t head_be32(const Payload *p, int at)
{
    return head_be16(p, at) << 16 | head_be16(p, at + 2);
}

static int payload_type(const Payload *p, int at)
{
    return p->head[at + 1] & 0x7F;
}

static void admit(Candidate *c, int kind, int verified, int64_t rtp)
{
    c->ok = 1;
    c->verified = verified;
    c->kind = kind;
    c->rtp = rtp;
}

/* RTP at `at`: V=2, CC=0, PT static (0-34) or dynamic (96-127), RFC 8285 extension inside. */
static int rtp_ok(const Payload *p, int at)
{
    uint32_t first = p->head[at];
    int pt = payload_type(p, at);
    if (p->length < at + 12 || (first & 0xCF) != 0x80 ||
        (pt > RTP_STATIC_PT_MAX && pt < RTP_DYNAMIC_PT_MIN))
        return 0;
    if (!(first & 0x10))
        return 1;
    uint32_t profile = head_be16(p, at + 12), words = head_be16(p, at + 14);
    int rfc8285 = profile == ONE_BYTE_PROFILE ||
                  (profile & TWO_BYTE_PROFILE_MASK) == TWO_BYTE_PROFILE;
    return p->length >= at + 16 && rfc8285 && p->length >= at + 16 + 4 * (int64_t)words;
}

/* RTCP at `at`: V=2, PT 200-207, and the first packet's length inside the payload. */
static int rtcp_ok(const Payload *p, int at)
{
    uint32_t packet_type = p->head[at + 1];
    return p->length >= at + 8 && p->head[at] >> 6 == 2 && packet_type >= RTCP_PT_MIN &&
           packet_type < RTCP_PT_END && at + 4 * ((int64_t)head_be16(p, at + 2) + 1) <= p->length;
}

static int rtp_kind(const Payload *p, int at, int kind)
{
    return payload_type(p, at) == FEC_PAYLOAD_TYPE ? MEDIA_FEC : kind;
}

/* Types 1, 15, 30 (RTP at a fixed offset). */
static void rtp_type(Candidate *c, const Payload *p, int at, int kind)
{
    if (rtp_ok(p, at))
        admit(c, rtp_kind(p, at, kind), 1, at);
}

/* Types 33-35: RTCP at +16. */
static void rtcp_type(Candidate *c, const Payload *p, int base)
{
    int at = base + RTCP_AT;
    if (rtcp_ok(p, at)) {
        admit(c, MEDIA_RTCP, 1, at);
        c->rtcp = 1;
    }
}

/* §1.8: a 31-byte FEC RTP packet then a second header (seen as 0x90) at I+55. */
static int second_rtp(const Payload *p, int base, int first)
{
    int at = base + SECOND_RTP_AT;
    return at < ZOOM_HEAD_BYTES && payload_type(p, first) == FEC_PAYLOAD_TYPE &&
           p->length >= at + 16 && p->head[at] == SECOND_RTP_FIRST_BYTE;
}

/* Type 16: RTP at +24 after frame fields when I[20] == 2, else at +20; maybe a second RTP. */
static void video(Candidate *c, const Payload *p, int base)
{
    int framed = p->length > base + VIDEO_FRAME_FLAG_AT && p->head[base + VIDEO_FRAME_FLAG_AT] == 2;
    int at = base + (framed ? VIDEO_FRAMED_RTP_AT : VIDEO_RTP_AT);
    if (!rtp_ok(p, at))
        return;
    int second = framed && second_rtp(p, base, at);
    int fec = payload_type(p, at) == FEC_PAYLOAD_TYPE && !second;
    admit(c, fec ? MEDIA_FEC : MEDIA_VIDEO, 1, at);
    if (second)
        c->second = base + SECOND_RTP_AT;
}

/* Type 13: a type-30 header nested at I+7 when I[7] == 0x1e, otherwise opaque. */
static void server_screen(Candidate *c, const Payload *p, int base)
{
    int nested_at = base + NESTED_HEADER_AT, at = nested_at + P2P_SCREEN_RTP_AT;
    if (!(p->length > nested_at && p->head[nested_at] == TYPE_P2P_SCREEN))
        admit(c, MEDIA_UNKNOWN, 0, -1);
    else if (rtp_ok(p, at))
        admit(c, rtp_kind(p, at, MEDIA_SCREEN), 1, at);
}

/* Type 21: a bandwidth-probe filler when I[22..23] == 0x03E8, otherwise opaque. */
static void filler(Candidate *c, const Payload *p, int base)
{
    int at = base + FILLER_MARKER_AT;
    if (p->length >= at + 2 && head_be16(p, at) == FILLER_MARKER)
        admit(c, MEDIA_PROBE, 1, -1);
    else
        admit(c, MEDIA_UNKNOWN, 0, -1);
}

/* Type 31: prefix, lengths of the IP text and the UUID adding up to the packet length. */
static void setup(Candidate *c, const Payload *p, int base)
{
    int64_t ip_length = head_be32(p, base + SETUP_IP_LENGTH_AT);
    int64_t uuid_length_at = base + SETUP_IP_LENGTH_AT + 4 + ip_length;
    if (p->length < base + SETUP_FIXED_LENGTH || memcmp(p->head + base, SETUP_PREFIX, 3) != 0 ||
        ip_length == 0 || uuid_length_at + 4 > ZOOM_HEAD_BYTES)
        return;
    int64_t uuid_length = head_be32(p, (int)uuid_length_at);
    if (p->length == base + SETUP_FIXED_LENGTH + ip_length + uuid_length)
        admit(c, MEDIA_SETUP, 1, -1);
}

/* The media encapsulation whose type byte is at `base` (zoom._core_cols). */
static Candidate core(const Payload *p, int base)
{
    Candidate c = NO_CANDIDATE;
    if (p->length <= base)
        return c;
    int media_type = p->head[base];
    switch (media_type) {
    case TYPE_RTP_1: rtp_type(&c, p, base + RTP_TYPE_1_RTP_AT, MEDIA_UNKNOWN); break;
    case TYPE_AUDIO: rtp_type(&c, p, base + AUDIO_RTP_AT, MEDIA_AUDIO); break;
    case TYPE_P2P_SCREEN: rtp_type(&c, p, base + P2P_SCREEN_RTP_AT, MEDIA_SCREEN); break;
    case TYPE_RTCP: case TYPE_RTCP_SR_SDES: case TYPE_RTCP_35: rtcp_type(&c, p, base); break;
    case TYPE_VIDEO: video(&c, p, base); break;
    case TYPE_SERVER_SCREEN: server_screen(&c, p, base); break;
    case TYPE_FILLER: filler(&c, p, base); break;
    case TYPE_SETUP: setup(&c, p, base); break;
    case TYPE_TYPE_10: case TYPE_32: admit(&c, MEDIA_UNKNOWN, 0, -1); break;
    case TYPE_CONTROL: admit(&c, MEDIA_SETUP, 0, -1); break;
    }
    if (c.ok)
        c.media_type = media_type;
    return c;
}

/* The media encapsulation at `base`, unwrapping type 7 (a nested header at base + 7). */
static Candidate media(const Payload *p, int base)
{
    if (!(p->length > base && p->head[base] == TYPE_WRAPPER))
        return core(p, base);
    Candidate nested = core(p, base + NESTED_HEADER_AT);
    if (nested.ok)
        nested.media_type = TYPE_WRAPPER;
    return nested;
}

/* SFU types 1/2 (handshake), 3/4 (keep-alive), 7: only the first bytes are checkable. */
static int sfu_control(const Payload *p)
{
    const uint8_t *h = p->head;
    if (h[0] == 1 || h[0] == 2)
        return p->length >= 19 && h[1] == 0 && h[2] >= 1 && h[2] <= 3;
    if (h[0] == 3 || h[0] == 4)
        return p->length >= 13 && h[1] == 0 && h[2] == 0;
    return h[0] == TYPE_WRAPPER && p->length >= 10 && h[1] == 0;
}

static int sfu_direction(uint32_t direction_byte)
{
    if (direction_byte == 0x00 || direction_byte == 0x01)
        return DIRECTION_TO_SERVER;
    return direction_byte == 0x04 || direction_byte == 0x05 ? DIRECTION_FROM_SERVER
                                                            : DIRECTION_NONE;
}

static Candidate sfu(const Payload *p, int server_flow, int *direction)
{
    Candidate c = media(p, SFU_HEADER_LENGTH);
    *direction = sfu_direction(p->head[SFU_DIRECTION_AT]);
    c.ok = c.ok && p->head[0] == SFU_MEDIA && p->length > SFU_HEADER_LENGTH &&
           *direction != DIRECTION_NONE;
    if (server_flow && p->length >= 1 && sfu_control(p)) {
        c = NO_CANDIDATE;
        admit(&c, MEDIA_SETUP, 0, -1);
        *direction = DIRECTION_NONE;
    }
    return c;
}

typedef struct {
    Candidate chosen;
    int layout, direction;
} ZoomRow;

/* Per row: SFU, P2P, legacy on server flows; P2P, SFU, legacy otherwise. */
static ZoomRow zoom_row(const Payload *p, int server_flow)
{
    int direction;
    Candidate by_sfu = sfu(p, server_flow, &direction);
    ZoomRow sfu_row = {by_sfu, LAYOUT_SFU, direction};
    if (by_sfu.ok && server_flow) /* the readings are pure: only those that can win are made */
        return sfu_row;
    Candidate p2p = media(p, 0);
    p2p.ok = p2p.ok && p2p.verified;
    if (by_sfu.ok && !p2p.ok)
        return sfu_row;
    if (p2p.ok)
        return (ZoomRow){p2p, LAYOUT_P2P, DIRECTION_NONE};
    Candidate legacy = media(p, LEGACY_PREFIX);
    legacy.ok = legacy.ok && p->head[0] == SFU_MEDIA && (legacy.verified || server_flow);
    if (legacy.ok)
        return (ZoomRow){legacy, LAYOUT_LEGACY, DIRECTION_NONE};
    return (ZoomRow){NO_CANDIDATE, LAYOUT_NONE, DIRECTION_NONE};
}

enum { ZC_VALID, ZC_LAYOUT, ZC_MEDIA_TYPE, ZC_MEDIA_KIND, ZC_DIRECTION, ZC_RTP_OFFSET,
       ZC_SECOND_RTP_OFFSET, ZC_IS_RTCP, N_ZOOM_COLUMNS };
enum { ZOOM_LENGTH, ZOOM_SERVER_FLOW, N_ZOOM_INPUTS };

static const ColumnSpec ZOOM_INPUTS[N_ZOOM_INPUTS] = {
    {"length", KIND_INT, 8}, {"server_flow", KIND_BOOL, 1},
};

static const ColumnSpec ZOOM_COLUMNS[N_ZOOM_COLUMNS] = {
    {"valid", KIND_BOOL, 1}, {"layout", KIND_INT, 1}, {"media_type", KIND_INT, 2},
    {"media_kind", KIND_INT, 1}, {"direction", KIND_INT, 1}, {"rtp_offset", KIND_INT, 8},
    {"second_rtp_offset", KIND_INT, 8}, {"is_rtcp", KIND_BOOL, 1},
};

typedef struct {
    const uint8_t *head;
    Py_ssize_t width, n_rows;
    const int64_t *length;
    const uint8_t *server_flow;
    void *out[N_ZOOM_COLUMNS];
} ZoomBatch;

static void store_zoom_row(const ZoomBatch *zb, Py_ssize_t i, const ZoomRow *row)
{
    const Candidate *c = &row->chosen;
    COLUMN(zb, ZC_VALID, uint8_t)[i] = (uint8_t)c->ok;
    COLUMN(zb, ZC_LAYOUT, int8_t)[i] = (int8_t)row->layout;
    COLUMN(zb, ZC_MEDIA_TYPE, int16_t)[i] = (int16_t)c->media_type;
    COLUMN(zb, ZC_MEDIA_KIND, int8_t)[i] = (int8_t)c->kind;
    COLUMN(zb, ZC_DIRECTION, int8_t)[i] = (int8_t)row->direction;
    COLUMN(zb, ZC_RTP_OFFSET, int64_t)[i] = c->rtp;
    COLUMN(zb, ZC_SECOND_RTP_OFFSET, int64_t)[i] = c->second;
    COLUMN(zb, ZC_IS_RTCP, uint8_t)[i] = (uint8_t)c->rtcp;
}

static void zoom_batch(const ZoomBatch *zb)
{
    for (Py_ssize_t i = 0; i < zb->n_rows; i++) {
        Payload p = {zb->head + i * zb->width, zb->length[i]};
        ZoomRow row = zoom_row(&p, zb->server_flow[i] != 0);
        store_zoom_row(zb, i, &row);
    }
}

PyDoc_STRVAR(zoom_classify_doc,
"zoom_classify(head, width, length, server_flow, *outputs) -> None\n\n"
"analyzer.decode.zoom.zoom_columns in C. head: C-contiguous uint8 rows of `width` (>= 64)\n"
"bytes, each a UDP payload's first bytes, zero-padded; length: int64 payload lengths;\n"
"server_flow: bool. outputs, one item per row: valid bool, layout i1, media_type i2,\n"
"media_kind i1, direction i1, rtp_offset i8, second_rtp_offset i8, is_rtcp bool (codes as\n"
"in zoom.py: LAYOUT_CODES, MEDIA_KINDS = ZOOM_MEDIA_KINDS here, DIRECTION_CODES).");

static PyObject *zoom_classify(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    enum { N_ARGS = 2 + N_ZOOM_INPUTS + N_ZOOM_COLUMNS };
    if (check_nargs("zoom_classify", nargs, N_ARGS) < 0)
        return NULL;
    Buffers bufs = {.held = 0};
    void *in[N_ZOOM_INPUTS];
    ZoomBatch zb = {.n_rows = -1, .width = PyLong_AsSsize_t(args[1])};
    if (zb.width == -1 && PyErr_Occurred())
        return NULL;
    Py_buffer *head = take(&bufs, args[0], 0, 0, 1, "head");
    if (head == NULL ||
        take_all(&bufs, args + 2, ZOOM_INPUTS, N_ZOOM_INPUTS, 0, &zb.n_rows, in) < 0 ||
        take_all(&bufs, args + 2 + N_ZOOM_INPUTS, ZOOM_COLUMNS, N_ZOOM_COLUMNS, 1, &zb.n_rows,
                 zb.out) < 0)
        goto fail;
    if (zb.width < ZOOM_HEAD_BYTES || head->len != zb.n_rows * zb.width) {
        PyErr_Format(PyExc_ValueError, "head must hold %zd rows of width >= %d bytes",
                     zb.n_rows, ZOOM_HEAD_BYTES);
        goto fail;
    }
    zb.head = head->buf;
    zb.length = in[ZOOM_LENGTH];
    zb.server_flow = in[ZOOM_SERVER_FLOW];
    Py_BEGIN_ALLOW_THREADS
    zoom_batch(&zb);
    Py_END_ALLOW_THREADS
    release(&bufs);
    Py_RETURN_NONE;
fail:
    release(&bufs);
    return NULL;
}

/* ------------------------------------------------------------------------- gathers */

/* analyzer/packets.py's Gather.u8/u16/u32: the big-endian value of `width` bytes at each
 * position, each byte's position clamped into the buffer (position + k wraps as numpy's int64
 * addition does). */
static void gather_values(const Bytes *b, const int64_t *pos, Py_ssize_t n, int width,
                          uint32_t *out)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        uint32_t value = 0;
        for (int k = 0; k < width; k++)
            value = value << 8 | byte_at(b, (int64_t)((uint64_t)pos[i] + (uint64_t)k));
        out[i] = value;
    }
}

PyDoc_STRVAR(gather_be_doc,
"gather_be(buffer, positions, width, out) -> None\n\n"
"analyzer.packets.Gather reads: out[i] = the big-endian value of the `width` (1 to 4) bytes at\n"
"positions[i] (int64), each byte position clamped into the buffer (an empty buffer reads\n"
"zeros). out: uint32, one item per position.");

static PyObject *gather_be(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("gather_be", nargs, 4) < 0)
        return NULL;
    long width = PyLong_AsLong(args[2]);
    if (width == -1 && PyErr_Occurred())
        return NULL;
    if (width < 1 || width > 4) {
        PyErr_Format(PyExc_ValueError, "width must be 1 to 4 bytes, not %ld", width);
        return NULL;
    }
    Buffers bufs = {.held = 0};
    Py_buffer *buffer = take(&bufs, args[0], 0, 0, 1, "buffer");
    Py_buffer *pos = buffer ? take(&bufs, args[1], 0, KIND_INT, 8, "positions") : NULL;
    Py_buffer *out = pos ? take(&bufs, args[3], 1, KIND_INT, 4, "out") : NULL;
    if (out == NULL) {
        release(&bufs);
        return NULL;
    }
    if (items(out) != items(pos)) {
        PyErr_Format(PyExc_ValueError, "out has %zd items, expected %zd", items(out), items(pos));
        release(&bufs);
        return NULL;
    }
    Bytes b = {buffer->buf, (uint64_t)buffer->len};
    Py_BEGIN_ALLOW_THREADS
    gather_values(&b, pos->buf, items(pos), (int)width, out->buf);
    Py_END_ALLOW_THREADS
    release(&bufs);
    Py_RETURN_NONE;
}

/* A payload head (analyzer/packets.py's Gather.rows): row[j] = buffer[offset + j] for the
 * j < min(length, columns) whose position is inside the buffer, else 0. Inlined where `columns`
 * is a constant, so that whole rows are copied without a memcpy call. */
static inline void gather_head(const Bytes *b, int64_t offset, int64_t length, Py_ssize_t columns,
                               uint8_t *row)
{
    int64_t size = (int64_t)b->size, low = 0, high = columns < length ? columns : length;
    if (offset >= 0 && length >= columns && offset <= size - columns) {
        memcpy(row, b->buf + offset, (size_t)columns);
        return;
    }
    memset(row, 0, (size_t)columns);
    if (offset >= size || offset < -(int64_t)columns)
        return;
    if (offset < 0)
        low = -offset;
    if (size - offset < high)
        high = size - offset;
    if (high > low)
        memcpy(row + low, b->buf + offset + low, (size_t)(high - low));
}

/* ------------------------------------------------------------------------- RTP headers */

/* analyzer/decode/rtp.py's rtp_header_columns for one zero-padded head row of `width` (>= 16)
 * bytes: the RFC 3550 fixed header, and whether it is valid for the candidate's length. */

enum { RTP_FIXED_HEADER = 12, RTP_CSRC = 4, RTP_EXTENSION_HEADER = 4, RTP_HEAD = 16,
       RTCP_SECOND_MIN = 192, RTCP_SECOND_MAX = 223 };

typedef struct {
    int valid, rtcp, payload_type, marker, extension;
    uint32_t sequence_number, timestamp, ssrc;
    int64_t header_length_min;
} RtpFields;

static inline uint32_t row_be16(const uint8_t *h, int64_t at)
{
    return (uint32_t)h[at] << 8 | h[at + 1];
}

static inline uint32_t row_be32(const uint8_t *h, int64_t at)
{
    return row_be16(h, at) << 16 | row_be16(h, at + 2);
}

/* 12 + 4*CC, plus the extension block when its length field lies within the row (else -1). */
static int64_t rtp_payload_offset(const uint8_t *h, Py_ssize_t width, int64_t header_length_min,
                                  int extension)
{
    int64_t length_field = header_length_min + 2;
    if (!extension)
        return header_length_min;
    if (length_field + 2 > width)
        return -1;
    return length_field + 2 + 4 * (int64_t)row_be16(h, length_field);
}

static RtpFields rtp_fields(const uint8_t *h, Py_ssize_t width, int64_t length)
{
    uint32_t b0 = h[0], b1 = h[1];
    RtpFields f;
    f.extension = (b0 & 0x10) != 0;
    f.header_length_min = RTP_FIXED_HEADER + RTP_CSRC * (b0 & 0x0F);
    int64_t payload_offset = rtp_payload_offset(h, width, f.header_length_min, f.extension);
    int second_is_rtcp = b1 >= RTCP_SECOND_MIN && b1 <= RTCP_SECOND_MAX; /* RFC 5761 §4 */
    f.rtcp = b0 >> 6 == 2 && second_is_rtcp;
    f.valid = b0 >> 6 == 2 && !second_is_rtcp && length >= f.header_length_min &&
              (!f.extension || length >= f.header_length_min + RTP_EXTENSION_HEADER) &&
              payload_offset <= length;
    f.payload_type = b1 & 0x7F;
    f.marker = (b1 & 0x80) != 0;
    f.sequence_number = row_be16(h, 2);
    f.timestamp = row_be32(h, 4);
    f.ssrc = row_be32(h, 8);
    return f;
}

/* ------------------------------------------------------------------------- media packets */

/* analyzer/media.py's find_media one UDP payload at a time: where RTP/RTCP headers may start
 * (plain, after a TURN ChannelData or MS-TURN header, inside Zoom's encapsulations), each such
 * candidate decoded as RTP and sorted into the RTP packets (with their stream key) and the RTCP
 * ones, and each Zoom payload's classification. A payload has at most three candidates: the
 * plain or TURN one, then up to two inside Zoom. */

enum { ENCAP_PLAIN, ENCAP_TURN, ENCAP_MS_TURN, ENCAP_ZOOM };
enum { MODE_LANE = 3, MODE_TURN = 4, LANE_PLAIN = 0, LANE_ZOOM_SERVER = 1, LANE_ZOOM_P2P = 2 };
enum { RTP_FIRST_MIN = 128, RTP_FIRST_MAX = 191, CHANNEL_FIRST_MIN = 64, CHANNEL_FIRST_MAX = 79,
       QUIC_LONG_FIRST_MIN = 192 }; /* RFC 7983 first-byte ranges (analyzer/decode/demux.py) */
enum { CHANNEL_HEADER = 4, CHANNEL_MIN = 16, MS_TURN_HEADER = 12, MS_TURN_MIN = 24,
       MS_TURN_MAGIC = 0xFF10 };
enum { MAX_CANDIDATES = 3, ZOOM_FEC_PT = 110 };

enum { MP_INDEX, MP_OFFSET, MP_LENGTH, MP_ENCAP, MP_ZOOM_KIND, MP_ZOOM_LAYOUT, MP_PAYLOAD_TYPE,
       MP_MARKER, MP_SEQUENCE_NUMBER, MP_TIMESTAMP, MP_SSRC, MP_HEADER_LENGTH_MIN, MP_EXTENSION,
       MP_STREAM_KEY, N_MP_COLUMNS };
enum { MR_INDEX, MR_OFFSET, MR_LENGTH, N_MR_COLUMNS };
enum { MS_START, MS_SIZE, MS_MODE, MS_FLOW, MS_DIRECTION, N_MS_INPUTS };
enum { MZ_VALID, MZ_LAYOUT, N_MZ_COLUMNS };

static const ColumnSpec MS_INPUTS[N_MS_INPUTS] = {
    {"start", KIND_INT, 8}, {"size", KIND_INT, 8}, {"mode", KIND_INT, 1}, {"flow", KIND_INT, 8},
    {"direction", KIND_INT, 1},
};
static const ColumnSpec MP_COLUMNS[N_MP_COLUMNS] = {
    {"index", KIND_INT, 8}, {"offset", KIND_INT, 8}, {"length", KIND_INT, 8},
    {"encap", KIND_INT, 1}, {"zoom_kind", KIND_INT, 1}, {"zoom_layout", KIND_INT, 1},
    {"payload_type", KIND_INT, 1}, {"marker", KIND_BOOL, 1}, {"sequence_number", KIND_INT, 2},
    {"timestamp", KIND_INT, 4}, {"ssrc", KIND_INT, 4}, {"header_length_min", KIND_INT, 8},
    {"extension", KIND_BOOL, 1}, {"stream_key", KIND_INT, 8},
};
static const ColumnSpec MR_COLUMNS[N_MR_COLUMNS] = {
    {"rtcp_index", KIND_INT, 8}, {"rtcp_offset", KIND_INT, 8}, {"rtcp_length", KIND_INT, 8},
};
static const ColumnSpec MZ_COLUMNS[N_MZ_COLUMNS] = {
    {"zoom_valid", KIND_BOOL, 1}, {"zoom_layout", KIND_INT, 1},
};

typedef struct {
    int64_t offset, length;
    int encap, kind, layout;
} MediaCandidate;

typedef struct {
    Bytes bytes;
    const int64_t *start, *size, *flow;
    const int8_t *mode, *direction;
    Py_ssize_t n_rows;
    void *rtp[N_MP_COLUMNS];   /* MAX_CANDIDATES items per payload */
    void *rtcp[N_MR_COLUMNS];  /* likewise */
    void *zoom[N_MZ_COLUMNS];  /* one item per payload */
    Py_ssize_t n_rtp, n_rtcp;
} MediaScan;

static inline int64_t wrap_add(int64_t a, int64_t b) /* numpy's int64 arithmetic */
{
    return (int64_t)((uint64_t)a + (uint64_t)b);
}

static inline int64_t wrap_sub(int64_t a, int64_t b)
{
    return (int64_t)((uint64_t)a - (uint64_t)b);
}

/* A payload's first bytes, copied (zero-padded) by the gather pass of scan_block. */
typedef struct {
    const Bytes *b;
    int64_t start, size;
    const uint8_t *bytes;
    int width;
} PayloadRow;

/* Byte k of the payload as Gather reads it: from the copy when it holds it, else clamped. */
static inline uint32_t payload_byte(const PayloadRow *r, int k)
{
    int64_t pos = wrap_add(r->start, k);
    if (k < r->width && k < r->size && pos >= 0 && (uint64_t)pos < r->b->size)
        return r->bytes[k];
    return byte_at(r->b, pos);
}

static inline uint32_t payload_be16(const PayloadRow *r, int k)
{
    return payload_byte(r, k) << 8 | payload_byte(r, k + 1);
}

/* The plain, TURN ChannelData or MS-TURN candidate (the first byte tells them apart). */
static int plain_or_turn(const PayloadRow *r, int mode, MediaCandidate *c)
{
    uint32_t first = payload_byte(r, 0);
    int turn = (mode & MODE_TURN) != 0;
    int64_t start = r->start, size = r->size;
    if ((mode & MODE_LANE) == LANE_PLAIN && first >= RTP_FIRST_MIN && first <= RTP_FIRST_MAX) {
        *c = (MediaCandidate){start, size, ENCAP_PLAIN, -1, 0};
        return 1;
    }
    if (turn && first >= CHANNEL_FIRST_MIN && first <= CHANNEL_FIRST_MAX && size >= CHANNEL_MIN) {
        int64_t inner = payload_be16(r, 2), room = size - CHANNEL_HEADER;
        *c = (MediaCandidate){wrap_add(start, CHANNEL_HEADER), inner < room ? inner : room,
                              ENCAP_TURN, -1, 0};
        return 1;
    }
    if (turn && first >= QUIC_LONG_FIRST_MIN && size >= MS_TURN_MIN &&
        payload_be16(r, 0) == MS_TURN_MAGIC) {
        *c = (MediaCandidate){wrap_add(start, MS_TURN_HEADER), size - MS_TURN_HEADER,
                              ENCAP_MS_TURN, -1, 0};
        return 1;
    }
    return 0;
}

/* Zoom's first and second RTP packet (r->bytes: the first ZOOM_HEAD_BYTES, zero-padded); the
 * payload's classification goes to valid/layout. */
static int zoom_candidates(const PayloadRow *r, int server_flow, MediaCandidate *c,
                           uint8_t *valid, int8_t *layout)
{
    Payload p = {r->bytes, r->size};
    ZoomRow row = zoom_row(&p, server_flow);
    *valid = (uint8_t)row.chosen.ok;
    *layout = (int8_t)row.layout;
    int n = 0;
    if (!row.chosen.ok || row.chosen.rtp < 0)
        return 0;
    int64_t rel[2] = {row.chosen.rtp, row.chosen.second};
    for (int k = 0; k < 2 && rel[k] >= 0; k++)
        c[n++] = (MediaCandidate){wrap_add(r->start, rel[k]), wrap_sub(r->size, rel[k]),
                                  ENCAP_ZOOM, row.chosen.kind, row.layout};
    return n;
}

/* gather_head(candidate, RTP_HEAD columns), from the payload's copy when it holds every byte
 * needed. */
static void candidate_head(const PayloadRow *r, const MediaCandidate *c, uint8_t *out)
{
    int64_t rel = wrap_sub(c->offset, r->start);
    if (rel >= 0 && rel <= r->width - RTP_HEAD && r->size >= rel && c->length <= r->size - rel) {
        int64_t keep = c->length < 0 ? 0 : c->length < RTP_HEAD ? c->length : RTP_HEAD;
        if (keep == RTP_HEAD) { /* the usual: a constant-size copy */
            memcpy(out, r->bytes + rel, RTP_HEAD);
            return;
        }
        memcpy(out, r->bytes + rel, (size_t)keep);
        memset(out + keep, 0, (size_t)(RTP_HEAD - keep));
    } else {
        gather_head(r->b, c->offset, c->length, RTP_HEAD, out);
    }
}

/* media.py's _stream_key: flow, direction, Zoom FEC apart, SSRC (numpy's int64 shifts). */
static int64_t stream_key(int64_t flow, int8_t direction, int fec, uint32_t ssrc)
{
    uint64_t key = (uint64_t)flow << 34 | (uint64_t)(int64_t)direction << 33;
    return (int64_t)(key | (uint64_t)fec << 32 | ssrc);
}

#define COLUMN_OF(columns, index, type) ((type *)(columns)[index])

/* Decodes a candidate and files it as an RTP packet, as RTCP, or not at all. */
static void file_candidate(MediaScan *ms, Py_ssize_t i, const PayloadRow *r,
                           const MediaCandidate *c)
{
    uint8_t head[RTP_HEAD];
    candidate_head(r, c, head);
    RtpFields f = rtp_fields(head, RTP_HEAD, c->length);
    if (f.rtcp) {
        Py_ssize_t at = ms->n_rtcp++;
        COLUMN_OF(ms->rtcp, MR_INDEX, int64_t)[at] = i;
        COLUMN_OF(ms->rtcp, MR_OFFSET, int64_t)[at] = c->offset;
        COLUMN_OF(ms->rtcp, MR_LENGTH, int64_t)[at] = c->length;
    }
    if (!f.valid)
        return;
    Py_ssize_t at = ms->n_rtp++;
    int fec = c->encap == ENCAP_ZOOM && f.payload_type == ZOOM_FEC_PT;
    void *const *out = ms->rtp;
    COLUMN_OF(out, MP_INDEX, int64_t)[at] = i;
    COLUMN_OF(out, MP_OFFSET, int64_t)[at] = c->offset;
    COLUMN_OF(out, MP_LENGTH, int64_t)[at] = c->length;
    COLUMN_OF(out, MP_ENCAP, int8_t)[at] = (int8_t)c->encap;
    COLUMN_OF(out, MP_ZOOM_KIND, int8_t)[at] = (int8_t)c->kind;
    COLUMN_OF(out, MP_ZOOM_LAYOUT, int8_t)[at] = (int8_t)c->layout;
    COLUMN_OF(out, MP_PAYLOAD_TYPE, uint8_t)[at] = (uint8_t)f.payload_type;
    COLUMN_OF(out, MP_MARKER, uint8_t)[at] = (uint8_t)f.marker;
    COLUMN_OF(out, MP_SEQUENCE_NUMBER, uint16_t)[at] = (uint16_t)f.sequence_number;
    COLUMN_OF(out, MP_TIMESTAMP, uint32_t)[at] = f.timestamp;
    COLUMN_OF(out, MP_SSRC, uint32_t)[at] = f.ssrc;
    COLUMN_OF(out, MP_HEADER_LENGTH_MIN, int64_t)[at] = f.header_length_min;
    COLUMN_OF(out, MP_EXTENSION, uint8_t)[at] = (uint8_t)f.extension;
    COLUMN_OF(out, MP_STREAM_KEY, int64_t)[at] =
        stream_key(ms->flow[i], ms->direction[i], fec, f.ssrc);
}

static int is_zoom_lane(int mode)
{
    return (mode & MODE_LANE) == LANE_ZOOM_SERVER || (mode & MODE_LANE) == LANE_ZOOM_P2P;
}

/* One payload's candidates, filed. */
static void payload_media(MediaScan *ms, Py_ssize_t i, const PayloadRow *r)
{
    MediaCandidate c[MAX_CANDIDATES];
    int mode = ms->mode[i];
    int n = plain_or_turn(r, mode, c);
    uint8_t *valid = &COLUMN_OF(ms->zoom, MZ_VALID, uint8_t)[i];
    int8_t *layout = &COLUMN_OF(ms->zoom, MZ_LAYOUT, int8_t)[i];
    *valid = 0;
    *layout = LAYOUT_NONE;
    if (is_zoom_lane(mode))
        n += zoom_candidates(r, (mode & MODE_LANE) == LANE_ZOOM_SERVER, c + n, valid, layout);
    for (int k = 0; k + 1 < n; k++) /* the first of two ends where the second starts */
        c[k].length = wrap_sub(c[k + 1].offset, c[k].offset);
    for (int k = 0; k < n; k++)
        file_candidate(ms, i, r, &c[k]);
}

#define ROWS_AHEAD 32 /* payloads lie hundreds of bytes apart in file order: prefetch ahead */

/* Payloads are read in blocks: first their bytes are copied (loads independent of each other,
 * so many cache and TLB misses overlap), then decided on from the copies. Deciding as each byte
 * arrives stalls on every miss: about 3x slower on 64 MiB batches. */
enum { BLOCK_ROWS = 64, TURN_ROW_BYTES = 32 /* MS-TURN's 12 + a 16-byte head */,
       PLAIN_ROW_BYTES = 16 };

/* How many of a payload's first bytes its candidates may need: fewer bytes, fewer cache lines. */
static int row_width(int mode)
{
    if (is_zoom_lane(mode))
        return ZOOM_HEAD_BYTES;
    return mode & MODE_TURN ? TURN_ROW_BYTES : PLAIN_ROW_BYTES;
}

/* The cache lines that the payload's row copy reads. */
static void prefetch_payload(const MediaScan *ms, Py_ssize_t i)
{
    int64_t start = ms->start[i];
    if (start < 0 || (uint64_t)start >= ms->bytes.size)
        return;
    PREFETCH(ms->bytes.buf + start);
    int64_t last = start + row_width(ms->mode[i]) - 1;
    if (last / CACHE_LINE != start / CACHE_LINE && (uint64_t)last < ms->bytes.size)
        PREFETCH(ms->bytes.buf + last);
}

static void scan_block(MediaScan *ms, Py_ssize_t first, Py_ssize_t rows)
{
    uint8_t copies[BLOCK_ROWS][ZOOM_HEAD_BYTES];
    for (Py_ssize_t r = 0; r < rows; r++) {
        Py_ssize_t i = first + r;
        if (i + ROWS_AHEAD < ms->n_rows)
            prefetch_payload(ms, i + ROWS_AHEAD);
        int width = row_width(ms->mode[i]); /* constants, so that gather_head inlines each */
        if (width == ZOOM_HEAD_BYTES)
            gather_head(&ms->bytes, ms->start[i], ms->size[i], ZOOM_HEAD_BYTES, copies[r]);
        else if (width == TURN_ROW_BYTES)
            gather_head(&ms->bytes, ms->start[i], ms->size[i], TURN_ROW_BYTES, copies[r]);
        else
            gather_head(&ms->bytes, ms->start[i], ms->size[i], PLAIN_ROW_BYTES, copies[r]);
    }
    for (Py_ssize_t r = 0; r < rows; r++) {
        Py_ssize_t i = first + r;
        PayloadRow row = {&ms->bytes, ms->start[i], ms->size[i], copies[r],
                          row_width(ms->mode[i])};
        payload_media(ms, i, &row);
    }
}

static void scan_media(MediaScan *ms)
{
    for (Py_ssize_t first = 0; first < ms->n_rows; first += BLOCK_ROWS)
        scan_block(ms, first, ms->n_rows - first < BLOCK_ROWS ? ms->n_rows - first : BLOCK_ROWS);
}

PyDoc_STRVAR(find_media_doc,
"find_media(buffer, start, size, mode, flow, direction, *outputs) -> (rtp, rtcp)\n\n"
"analyzer.media.find_media in C. start, size: int64 offsets and lengths of UDP payloads in\n"
"buffer; mode: int8 flow modes (0 plain, 1 Zoom server, 2 Zoom P2P, 3 none; +4 TURN); flow:\n"
"int64 flow index and direction: int8, per payload. outputs: the RTP packet columns\n"
"(RTP_PACKET_COLUMNS), the RTCP candidate columns (RTCP_COLUMNS), each with 3 items per\n"
"payload, then per payload zoom_valid bool and zoom_layout i1. Returns how many RTP packets and\n"
"RTCP candidates were written.");

static PyObject *find_media(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    enum { N_ARGS = 1 + N_MS_INPUTS + N_MP_COLUMNS + N_MR_COLUMNS + N_MZ_COLUMNS };
    if (check_nargs("find_media", nargs, N_ARGS) < 0)
        return NULL;
    Buffers bufs = {.held = 0};
    void *in[N_MS_INPUTS];
    MediaScan ms = {.n_rows = -1};
    Py_ssize_t rtp_capacity = -1, rtcp_capacity = -1;
    PyObject *const *outs = args + 1 + N_MS_INPUTS;
    Py_buffer *buffer = take(&bufs, args[0], 0, 0, 1, "buffer");
    if (buffer == NULL ||
        take_all(&bufs, args + 1, MS_INPUTS, N_MS_INPUTS, 0, &ms.n_rows, in) < 0 ||
        take_all(&bufs, outs, MP_COLUMNS, N_MP_COLUMNS, 1, &rtp_capacity, ms.rtp) < 0 ||
        take_all(&bufs, outs + N_MP_COLUMNS, MR_COLUMNS, N_MR_COLUMNS, 1, &rtcp_capacity,
                 ms.rtcp) < 0 ||
        take_all(&bufs, outs + N_MP_COLUMNS + N_MR_COLUMNS, MZ_COLUMNS, N_MZ_COLUMNS, 1,
                 &ms.n_rows, ms.zoom) < 0) {
        release(&bufs);
        return NULL;
    }
    if (rtp_capacity != MAX_CANDIDATES * ms.n_rows || rtcp_capacity != rtp_capacity) {
        PyErr_Format(PyExc_ValueError, "the RTP and RTCP outputs must hold %d items per payload",
                     MAX_CANDIDATES);
        release(&bufs);
        return NULL;
    }
    ms.bytes = (Bytes){buffer->buf, (uint64_t)buffer->len};
    ms.start = in[MS_START];
    ms.size = in[MS_SIZE];
    ms.mode = in[MS_MODE];
    ms.flow = in[MS_FLOW];
    ms.direction = in[MS_DIRECTION];
    Py_BEGIN_ALLOW_THREADS
    scan_media(&ms);
    Py_END_ALLOW_THREADS
    release(&bufs);
    return Py_BuildValue("nn", ms.n_rtp, ms.n_rtcp);
}

/* A tuple of the C strings `names` (module constants checked by the tests). */
static PyObject *name_tuple(const char *const *names, Py_ssize_t n)
{
    PyObject *tuple = PyTuple_New(n);
    for (Py_ssize_t i = 0; tuple && i < n; i++) {
        PyObject *name = PyUnicode_FromString(names[i]);
        if (name == NULL) {
            Py_CLEAR(tuple);
            break;
        }
        PyTuple_SET_ITEM(tuple, i, name);
    }
    return tuple;
}

static PyObject *spec_names(const ColumnSpec *specs, Py_ssize_t n)
{
    const char *names[32];
    for (Py_ssize_t i = 0; i < n; i++)
        names[i] = specs[i].name;
    return name_tuple(names, n);
}

/* ------------------------------------------------------------------------- handshake parsers */
/* analyzer/decode/tls.py's parse_client_hello and analyzer/decode/dns.py's parse_dns for the
 * usual, well-formed messages. Anything else (a short read, an odd length, an unusual
 * extension layout) gives None, and the Python parser, which is the reference, reads the message
 * again and says what is wrong: so the error texts stay Python's alone. */

/* A bounds-checked cursor over bytes; `ok` drops to 0 at the first short read and stays 0. */
typedef struct {
    const uint8_t *data;
    Py_ssize_t pos, end;
    int ok;
} Cursor;

static uint32_t cursor_uint(Cursor *c, Py_ssize_t size)
{
    uint32_t value = 0;
    if (!c->ok || c->end - c->pos < size) {
        c->ok = 0;
        return 0;
    }
    for (Py_ssize_t i = 0; i < size; i++)
        value = value << 8 | c->data[c->pos + i];
    c->pos += size;
    return value;
}

/* The next `size` bytes as a cursor of their own. */
static Cursor cursor_take(Cursor *c, Py_ssize_t size)
{
    Cursor part = {c->data, c->pos, c->pos, c->ok};
    if (!c->ok || size < 0 || c->end - c->pos < size) {
        c->ok = part.ok = 0;
        return part;
    }
    part.end = c->pos + size;
    c->pos += size;
    return part;
}

/* A TLS vector: a length of `length_size` bytes, then that many bytes. */
static Cursor cursor_vector(Cursor *c, Py_ssize_t length_size)
{
    Py_ssize_t size = (Py_ssize_t)cursor_uint(c, length_size);
    return cursor_take(c, size);
}

static Py_ssize_t cursor_left(const Cursor *c)
{
    return c->end - c->pos;
}

static PyObject *cursor_bytes(const Cursor *c)
{
    return PyBytes_FromStringAndSize((const char *)c->data + c->pos, cursor_left(c));
}

static PyObject *cursor_text(const Cursor *c)
{
    return PyUnicode_DecodeUTF8((const char *)c->data + c->pos, cursor_left(c), "replace");
}

/* RFC 8701's GREASE values: 0x?A?A with both bytes equal. */
static int is_grease_value(uint32_t value)
{
    return (value & 0x0F0F) == 0x0A0A && (value >> 8) == (value & 0xFF);
}

/* The big-endian uint16 values of an even-length cursor, GREASE left out, as a tuple. */
static PyObject *uint16_values(const Cursor *c)
{
    Py_ssize_t count = 0;
    for (Py_ssize_t at = c->pos; at + 1 < c->end; at += 2)
        count += !is_grease_value((uint32_t)c->data[at] << 8 | c->data[at + 1]);
    PyObject *values = PyTuple_New(count);
    Py_ssize_t index = 0;
    for (Py_ssize_t at = c->pos; values != NULL && at + 1 < c->end; at += 2) {
        uint32_t value = (uint32_t)c->data[at] << 8 | c->data[at + 1];
        if (is_grease_value(value))
            continue;
        PyObject *number = PyLong_FromUnsignedLong(value);
        if (number == NULL) {
            Py_CLEAR(values);
            break;
        }
        PyTuple_SET_ITEM(values, index++, number);
    }
    return values;
}

enum { /* extension types (analyzer/decode/tls.py EXT_*) */
    EXT_SERVER_NAME = 0,
    EXT_USE_SRTP = 14,
    EXT_ALPN = 16,
    EXT_SUPPORTED_VERSIONS = 43,
    EXT_QUIC_TRANSPORT_PARAMETERS = 57,
    EXT_QUIC_TRANSPORT_PARAMETERS_DRAFT = 0xFFA5,
    EXT_ENCRYPTED_CLIENT_HELLO = 0xFE0D,
};

/* Where a ClientHello's parts are; `usual` is 0 when Python must read it. */
typedef struct {
    int usual, dtls, quic, ech;
    uint32_t legacy_version;
    Cursor random, session_id, cookie, suites, compression, extensions;
    Cursor server_name, versions, alpn, srtp_profiles, srtp_mki; /* .data NULL: absent */
    Py_ssize_t n_extensions;
} HelloLayout;

static const Cursor ABSENT = {NULL, 0, 0, 0};

/* Records the first extension of each type read here (a hello may repeat one). */
static void note_extension(HelloLayout *h, uint32_t type, Cursor data)
{
    Cursor *slot = type == EXT_SERVER_NAME ? &h->server_name
                   : type == EXT_SUPPORTED_VERSIONS ? &h->versions
                   : type == EXT_ALPN ? &h->alpn
                   : type == EXT_USE_SRTP ? &h->srtp_profiles : NULL;
    if (slot != NULL && slot->data == NULL)
        *slot = data;
    h->quic |= type == EXT_QUIC_TRANSPORT_PARAMETERS || type == EXT_QUIC_TRANSPORT_PARAMETERS_DRAFT;
    h->ech |= type == EXT_ENCRYPTED_CLIENT_HELLO;
}

/* server_name as one host name filling its list (tls.py `_parse_server_name`'s fast path);
 * narrows the cursor to the name. */
static int usual_server_name(Cursor *c)
{
    Py_ssize_t n = cursor_left(c);
    if (n <= 5 || c->data[c->pos + 2] != 0)
        return 0;
    const uint8_t *p = c->data + c->pos;
    if (((Py_ssize_t)p[0] << 8 | p[1]) + 2 != n || ((Py_ssize_t)p[3] << 8 | p[4]) + 5 != n)
        return 0;
    c->pos += 5;
    return 1;
}

/* supported_versions as one list filling the extension (`_parse_client_versions`' fast path);
 * narrows the cursor to the list. */
static int usual_versions(Cursor *c)
{
    Py_ssize_t n = cursor_left(c);
    if (n == 0 || c->data[c->pos] + 1 != n || c->data[c->pos] % 2)
        return 0;
    c->pos += 1;
    return 1;
}

/* ALPN: a list filling the extension, of names filling the list (`_parse_alpn`); narrows the
 * cursor to the list. */
static int usual_alpn(Cursor *c)
{
    Cursor outer = *c;
    Cursor names = cursor_vector(&outer, 2);
    if (!outer.ok || cursor_left(&outer) != 0)
        return 0;
    Cursor walk = names;
    while (walk.ok && cursor_left(&walk) > 0)
        cursor_vector(&walk, 1);
    *c = names;
    return walk.ok;
}

/* use_srtp: profiles<2..2^16-1> (even length), srtp_mki<0..255>, nothing after
 * (`_parse_use_srtp`); sets the profiles' and the MKI's cursors. */
static int usual_use_srtp(HelloLayout *h)
{
    Cursor data = h->srtp_profiles;
    h->srtp_profiles = cursor_vector(&data, 2);
    h->srtp_mki = cursor_vector(&data, 1);
    return data.ok && cursor_left(&data) == 0 && cursor_left(&h->srtp_profiles) % 2 == 0;
}

/* The extensions block: entries filling it exactly (`_parse_extensions`). */
static int read_extensions(HelloLayout *h, Cursor block)
{
    while (block.ok && cursor_left(&block) > 0) {
        uint32_t type = cursor_uint(&block, 2);
        Cursor data = cursor_vector(&block, 2);
        if (!block.ok)
            return 0;
        note_extension(h, type, data);
        h->n_extensions++;
    }
    return block.ok;
}

static HelloLayout client_hello_layout(const uint8_t *data, Py_ssize_t size, int dtls)
{
    HelloLayout h = {.dtls = dtls};
    h.server_name = h.versions = h.alpn = h.srtp_profiles = h.srtp_mki = h.cookie = ABSENT;
    Cursor c = {data, 0, size, 1};
    h.legacy_version = cursor_uint(&c, 2);
    h.random = cursor_take(&c, 32);
    h.session_id = cursor_vector(&c, 1);
    if (dtls)
        h.cookie = cursor_vector(&c, 1);
    h.suites = cursor_vector(&c, 2);
    h.compression = cursor_vector(&c, 1);
    h.extensions = ABSENT;
    if (c.ok && cursor_left(&c) > 0) {
        h.extensions = cursor_vector(&c, 2);
        if (!c.ok || cursor_left(&c) != 0 || !read_extensions(&h, h.extensions))
            return h;
    }
    if (!c.ok || cursor_left(&h.suites) % 2)
        return h;
    if (h.server_name.data != NULL && !usual_server_name(&h.server_name))
        return h;
    if (h.versions.data != NULL && !usual_versions(&h.versions))
        return h;
    if (h.alpn.data != NULL && !usual_alpn(&h.alpn))
        return h;
    if (h.srtp_profiles.data != NULL && !usual_use_srtp(&h))
        return h;
    h.usual = 1;
    return h;
}

/* The extensions as ((type, data bytes), ...), in wire order. */
static PyObject *extension_tuples(const HelloLayout *h)
{
    PyObject *out = PyTuple_New(h->n_extensions);
    Cursor block = h->extensions;
    for (Py_ssize_t i = 0; out != NULL && i < h->n_extensions; i++) {
        uint32_t type = cursor_uint(&block, 2);
        Cursor data = cursor_vector(&block, 2);
        PyObject *entry = Py_BuildValue("(IN)", type, cursor_bytes(&data));
        if (entry == NULL)
            Py_CLEAR(out);
        else
            PyTuple_SET_ITEM(out, i, entry);
    }
    return out;
}

static PyObject *alpn_names(const HelloLayout *h)
{
    Py_ssize_t count = 0;
    for (Cursor walk = h->alpn; walk.data != NULL && cursor_left(&walk) > 0; count++)
        cursor_vector(&walk, 1);
    PyObject *out = PyTuple_New(count);
    Cursor walk = h->alpn;
    for (Py_ssize_t i = 0; out != NULL && i < count; i++) {
        Cursor name = cursor_vector(&walk, 1);
        PyObject *text = cursor_text(&name);
        if (text == NULL)
            Py_CLEAR(out);
        else
            PyTuple_SET_ITEM(out, i, text);
    }
    return out;
}

/* ClientHello's fields in tls.py's order (its `_without_grease` lists without GREASE). */
static PyObject *client_hello_fields(const HelloLayout *h)
{
    static const char empty[1] = "";
    PyObject *no_mki = PyBytes_FromStringAndSize(empty, 0);
    if (no_mki == NULL)
        return NULL;
    PyObject *out = Py_BuildValue(
        "(INNNNNNNNNNNOO)", h->legacy_version, cursor_bytes(&h->random),
        cursor_bytes(&h->session_id),
        h->dtls ? cursor_bytes(&h->cookie) : Py_NewRef(Py_None),
        uint16_values(&h->suites), cursor_bytes(&h->compression), extension_tuples(h),
        h->server_name.data != NULL ? cursor_text(&h->server_name) : Py_NewRef(Py_None),
        h->versions.data != NULL ? uint16_values(&h->versions) : PyTuple_New(0),
        alpn_names(h),
        h->srtp_profiles.data != NULL ? uint16_values(&h->srtp_profiles) : PyTuple_New(0),
        h->srtp_mki.data != NULL ? cursor_bytes(&h->srtp_mki) : Py_NewRef(no_mki),
        h->quic ? Py_True : Py_False, h->ech ? Py_True : Py_False);
    Py_DECREF(no_mki);
    return out;
}

PyDoc_STRVAR(client_hello_doc,
"client_hello(body, dtls) -> tuple | None\n\n"
"A usual, well-formed ClientHello body's fields in analyzer/decode/tls.py ClientHello's order;\n"
"None for anything Python must read (and report).");

static PyObject *client_hello(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("client_hello", nargs, 2) < 0)
        return NULL;
    int dtls = PyObject_IsTrue(args[1]);
    Py_buffer view;
    if (dtls < 0 || PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    HelloLayout h = client_hello_layout(view.buf, view.len, dtls);
    PyObject *out = h.usual ? client_hello_fields(&h) : Py_NewRef(Py_None);
    PyBuffer_Release(&view);
    return out;
}

enum { /* DNS (analyzer/decode/dns.py) */
    DNS_HEADER = 12,
    DNS_MAX_NAME = 255,
    DNS_MAX_POINTER_HOPS = 64,
    DNS_A = 1,
    DNS_CNAME = 5,
    DNS_PTR = 12,
    DNS_AAAA = 28,
};

/* A possibly compressed name at `offset` (dns.py `_read_name`) as text, labels joined by '.';
 * sets `after` to the offset after it in place. NULL with no error set when malformed. */
static PyObject *dns_name(const uint8_t *data, Py_ssize_t size, Py_ssize_t offset,
                          Py_ssize_t *after)
{
    char text[DNS_MAX_NAME + 1];
    Py_ssize_t end = -1, length = 0, written = 0;
    for (int hops = 0;;) {
        if (offset >= size)
            return NULL;
        uint8_t tag = data[offset];
        if ((tag & 0xC0) == 0xC0) {
            Py_ssize_t target = offset + 2 > size ? offset
                                : (Py_ssize_t)(tag & 0x3F) << 8 | data[offset + 1];
            if (target >= offset || hops >= DNS_MAX_POINTER_HOPS)
                return NULL;
            end = end < 0 ? offset + 2 : end;
            hops++;
            offset = target;
            continue;
        }
        if (tag & 0xC0)
            return NULL;
        if (tag == 0)
            break;
        length += tag + 1;
        if (length > DNS_MAX_NAME || offset + 1 + tag > size)
            return NULL;
        if (written > 0)
            text[written++] = '.';
        memcpy(text + written, data + offset + 1, tag);
        written += tag;
        offset += tag + 1;
    }
    *after = end >= 0 ? end : offset + 1;
    return PyUnicode_DecodeUTF8(text, written, "replace");
}

/* The questions as ((name, qtype), ...); moves `offset` past them. */
static PyObject *dns_questions(const uint8_t *data, Py_ssize_t size, Py_ssize_t count,
                               Py_ssize_t *offset)
{
    PyObject *out = PyTuple_New(count);
    for (Py_ssize_t i = 0; out != NULL && i < count; i++) {
        PyObject *name = dns_name(data, size, *offset, offset);
        PyObject *entry = name == NULL || *offset + 4 > size ? NULL
                          : Py_BuildValue("(OI)", name, read_u16(data + *offset, 1));
        Py_XDECREF(name);
        if (entry == NULL) {
            Py_CLEAR(out);
            break;
        }
        *offset += 4;
        PyTuple_SET_ITEM(out, i, entry);
    }
    return out;
}

/* An answer record's kept value: an A address as text, an AAAA address as its 16 bytes (dns.py
 * formats it), a CNAME or PTR target name; Py_None for other types. */
static PyObject *dns_value(const uint8_t *data, Py_ssize_t size, uint32_t type, Py_ssize_t start,
                           Py_ssize_t end)
{
    Py_ssize_t after;
    switch (type) {
    case DNS_A:
        if (end - start != 4)
            return NULL;
        return PyUnicode_FromFormat("%u.%u.%u.%u", (unsigned)data[start],
                                    (unsigned)data[start + 1], (unsigned)data[start + 2],
                                    (unsigned)data[start + 3]);
    case DNS_AAAA:
        return end - start != 16 ? NULL
               : PyBytes_FromStringAndSize((const char *)data + start, 16);
    case DNS_CNAME:
    case DNS_PTR: {
        PyObject *name = dns_name(data, size, start, &after);
        if (name != NULL && after > end)
            Py_CLEAR(name);
        return name;
    }
    default:
        return Py_NewRef(Py_None);
    }
}

/* The kept answers as [(name, type, ttl, value), ...]; moves `offset` past the records. */
static PyObject *dns_answers(const uint8_t *data, Py_ssize_t size, Py_ssize_t count,
                             Py_ssize_t *offset)
{
    PyObject *out = PyList_New(0);
    for (Py_ssize_t i = 0; out != NULL && i < count; i++) {
        PyObject *name = dns_name(data, size, *offset, offset), *value = NULL;
        const uint8_t *tail = data + *offset;
        Py_ssize_t start = *offset + 10;
        Py_ssize_t end = name == NULL || start > size ? -1
                         : start + (Py_ssize_t)read_u16(tail + 8, 1);
        if (end >= 0 && end <= size)
            value = dns_value(data, size, read_u16(tail, 1), start, end);
        int failed = value == NULL;
        if (value != NULL && value != Py_None) {
            PyObject *entry = Py_BuildValue("(OIkO)", name, read_u16(tail, 1),
                                            (unsigned long)read_u32(tail + 4, 1), value);
            failed = entry == NULL || PyList_Append(out, entry) < 0;
            Py_XDECREF(entry);
        }
        Py_XDECREF(name);
        Py_XDECREF(value);
        if (failed)
            Py_CLEAR(out);
        *offset = end;
    }
    return out;
}

PyDoc_STRVAR(dns_message_doc,
"dns_message(data) -> tuple | None\n\n"
"A well-formed DNS message's (id, flags, ((name, qtype), ...), [(name, type, ttl, value), ...])\n"
"with analyzer/decode/dns.py's kept answers (AAAA values as bytes); None for anything Python\n"
"must read (and report).");

static PyObject *dns_message(PyObject *self, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const uint8_t *data = view.buf;
    Py_ssize_t size = view.len, offset = DNS_HEADER;
    PyObject *out = NULL, *questions = NULL, *answers = NULL;
    if (size >= DNS_HEADER) {
        questions = dns_questions(data, size, read_u16(data + 4, 1), &offset);
        if (questions != NULL)
            answers = dns_answers(data, size, read_u16(data + 6, 1), &offset);
        if (answers != NULL)
            out = Py_BuildValue("(IIOO)", read_u16(data, 1), read_u16(data + 2, 1), questions,
                                answers);
    }
    Py_XDECREF(questions);
    Py_XDECREF(answers);
    PyBuffer_Release(&view);
    if (out == NULL && !PyErr_Occurred())  /* malformed: Python reads it */
        return Py_NewRef(Py_None);
    return out;
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

#define TEXT(x) #x
#define TEXT_OF(x) TEXT(x)

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
    {"seen", "(" TEXT_OF(SEEN_WORDS) ",)u8", offsetof(RtpState, seen)},
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

/* ------------------------------------------------------------------------- flow keys */

static inline uint64_t splitmix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ULL;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBULL;
    x ^= x >> 31;
    return x;
}

typedef struct {
    const int64_t *rows;
    const uint64_t *src_hi, *src_lo, *dst_hi, *dst_lo;
    const int32_t *sport, *dport;
    const uint8_t *proto;
    Py_ssize_t count, columns;
} FlowColumns;

/* analyzer/flows.py's flow_keys_numpy for each row: whether the source sorts first as
 * (address high, address low, port), and the splitmix64 chain over (protocol, A, B). Returns
 * the position of a row out of range, or -1. */
static Py_ssize_t flow_keys_loop(const FlowColumns *c, uint64_t *key, uint8_t *src_is_a)
{
    for (Py_ssize_t i = 0; i < c->count; i++) {
        int64_t r = c->rows[i];
        if (r < 0 || r >= c->columns)
            return i;
        uint64_t s[3] = {c->src_hi[r], c->src_lo[r], (uint64_t)(int64_t)c->sport[r]};
        uint64_t d[3] = {c->dst_hi[r], c->dst_lo[r], (uint64_t)(int64_t)c->dport[r]};
        int first = s[0] != d[0] ? s[0] < d[0] : s[1] != d[1] ? s[1] < d[1] : s[2] <= d[2];
        const uint64_t *a = first ? s : d, *b = first ? d : s;
        uint64_t k = splitmix64((uint64_t)c->proto[r]);
        for (int j = 0; j < 3; j++)
            k = splitmix64(k ^ a[j]);
        for (int j = 0; j < 3; j++)
            k = splitmix64(k ^ b[j]);
        key[i] = k;
        src_is_a[i] = (uint8_t)first;
    }
    return -1;
}

PyDoc_STRVAR(flow_keys_doc,
"flow_keys(rows, src_hi, src_lo, sport, dst_hi, dst_lo, dport, proto, key, src_is_a) -> None\n\n"
"Fill key (uint64) and src_is_a (bool) for the packets at rows (see analyzer/flows.py).");

static PyObject *flow_keys(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("flow_keys", nargs, 10) < 0)
        return NULL;
    static const char *names[] = {"rows", "src_hi", "src_lo", "sport", "dst_hi", "dst_lo",
                                  "dport", "proto", "key", "src_is_a"};
    static const Py_ssize_t sizes[] = {8, 8, 8, 4, 8, 8, 4, 1, 8, 1};
    Buffers bufs = {.held = 0};
    Py_buffer *views[10];
    for (int i = 0; i < 10; i++) {
        int kind = i == 9 ? KIND_BOOL : KIND_INT;
        views[i] = take(&bufs, args[i], i >= 8, kind, sizes[i], names[i]);
        if (views[i] == NULL) {
            release(&bufs);
            return NULL;
        }
    }
    Py_ssize_t columns = items(views[1]);
    for (int i = 2; i < 8; i++) {
        if (items(views[i]) != columns) {
            PyErr_Format(PyExc_ValueError, "%s has %zd items, expected %zd", names[i],
                         items(views[i]), columns);
            release(&bufs);
            return NULL;
        }
    }
    if (items(views[8]) != items(views[0]) || items(views[9]) != items(views[0])) {
        PyErr_SetString(PyExc_ValueError, "key and src_is_a need one item per row");
        release(&bufs);
        return NULL;
    }
    FlowColumns c = {views[0]->buf, views[1]->buf, views[2]->buf, views[4]->buf, views[5]->buf,
                     views[3]->buf, views[6]->buf, views[7]->buf, items(views[0]), columns};
    Py_ssize_t bad;
    Py_BEGIN_ALLOW_THREADS
    bad = flow_keys_loop(&c, views[8]->buf, views[9]->buf);
    Py_END_ALLOW_THREADS
    release(&bufs);
    if (bad >= 0) {
        PyErr_Format(PyExc_IndexError, "row %zd is out of range", bad);
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------- guarded mappings */

/* The kernel sends SIGBUS to a thread that reads a page of a shared file mapping past the
 * file's end, which happens when the capture is truncated while it is read (a ring of capture
 * files being rotated, a copy made over it), or a page whose read failed (EIO). The handler puts an anonymous zero page in place
 * of a faulting page of a guarded mapping (mmap MAP_FIXED, a plain system call on Linux) and
 * returns, so the read is retried and gives zeros. Faults elsewhere go to the previous
 * handler, or, if there was none, to the default action (the process ends as it would have). */
#if !defined(_WIN32)
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>
#endif

#define MAX_GUARDS 64

#if defined(MAP_ANONYMOUS) && defined(MAP_FIXED) && defined(SA_SIGINFO) && \
    (defined(__GNUC__) || defined(__clang__))
#define HAVE_GUARDS 1

typedef struct {
    uintptr_t start, end;     /* [start, end) of the mapping; start 0: the slot is free */
    unsigned long long pages; /* pages replaced by zeros */
    uintptr_t first;          /* offset of the first of them in the mapping (UINTPTR_MAX: none) */
} Guard;

static Guard guards[MAX_GUARDS];
static struct sigaction previous_bus;
static int bus_handler_installed;
static uintptr_t guard_page_size; /* (sysconf is not async-signal-safe: read it beforehand) */

static void restore_previous_bus(int sig, siginfo_t *info, void *context)
{
    if (previous_bus.sa_flags & SA_SIGINFO) {
        previous_bus.sa_sigaction(sig, info, context);
    } else if (previous_bus.sa_handler != SIG_DFL && previous_bus.sa_handler != SIG_IGN) {
        previous_bus.sa_handler(sig);
    } else { /* retrying the read faults again, now with the default action */
        sigaction(SIGBUS, &previous_bus, NULL);
    }
}

static void on_bus_error(int sig, siginfo_t *info, void *context)
{
    uintptr_t at = (uintptr_t)info->si_addr;
    uintptr_t page_size = guard_page_size;
    for (int i = 0; i < MAX_GUARDS; i++) {
        uintptr_t start = __atomic_load_n(&guards[i].start, __ATOMIC_ACQUIRE);
        if (start == 0 || at < start || at >= guards[i].end)
            continue;
        void *page = (void *)(at - at % page_size);
        if (mmap(page, page_size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) !=
            MAP_FAILED) {
            __atomic_add_fetch(&guards[i].pages, 1, __ATOMIC_RELAXED);
            uintptr_t offset = (uintptr_t)page - start;
            uintptr_t seen = __atomic_load_n(&guards[i].first, __ATOMIC_RELAXED);
            while (offset < seen && !__atomic_compare_exchange_n(&guards[i].first, &seen, offset, 1,
                                                                 __ATOMIC_RELAXED, __ATOMIC_RELAXED))
                ;
            return;
        }
        break;
    }
    restore_previous_bus(sig, info, context);
}

static int install_bus_handler(void)
{
    if (bus_handler_installed)
        return 0;
    long page_size = sysconf(_SC_PAGESIZE);
    if (page_size <= 0)
        return -1;
    guard_page_size = (uintptr_t)page_size;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_bus_error;
    action.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&action.sa_mask);
    if (sigaction(SIGBUS, &action, &previous_bus) != 0)
        return -1;
    bus_handler_installed = 1;
    return 0;
}
#endif

PyDoc_STRVAR(guard_mapping_doc,
             "guard_mapping(buffer) -> slot or -1\n\n"
             "Guard the file mapping that `buffer` exposes (e.g. an mmap): pages the file cannot\n"
             "give (it shrank, or a read failed) read as zeros instead of raising SIGBUS. -1 when\n"
             "this system or build cannot, or every slot is taken. The mapping must stay open\n"
             "until unguard_mapping(slot).");

static PyObject *guard_mapping(PyObject *self, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    uintptr_t start = (uintptr_t)view.buf, end = start + (uintptr_t)view.len;
    PyBuffer_Release(&view);
    long slot = -1;
#ifdef HAVE_GUARDS
    if (start != 0 && end > start && install_bus_handler() == 0) {
        for (int i = 0; i < MAX_GUARDS && slot < 0; i++) {
            if (guards[i].start != 0)
                continue;
            guards[i].end = end;
            guards[i].pages = 0;
            guards[i].first = UINTPTR_MAX;
            __atomic_store_n(&guards[i].start, start, __ATOMIC_RELEASE);
            slot = i;
        }
    }
#else
    (void)start;
    (void)end;
#endif
    return PyLong_FromLong(slot);
}

static int guard_slot(PyObject *arg, long *slot)
{
    *slot = PyLong_AsLong(arg);
    if (*slot == -1 && PyErr_Occurred())
        return -1;
    if (*slot < 0 || *slot >= MAX_GUARDS) {
        PyErr_SetString(PyExc_ValueError, "not a guard slot");
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(guarded_faults_doc,
             "guarded_faults(slot) -> (pages, first)\n\n"
             "How many pages of the guarded mapping read as zeros because the file could not give\n"
             "them (it shrank, or a read failed), and the offset of the first in the mapping (-1:\n"
             "none).");

static PyObject *guarded_faults(PyObject *self, PyObject *arg)
{
    long slot;
    if (guard_slot(arg, &slot) < 0)
        return NULL;
#ifdef HAVE_GUARDS
    unsigned long long pages = __atomic_load_n(&guards[slot].pages, __ATOMIC_RELAXED);
    uintptr_t first = __atomic_load_n(&guards[slot].first, __ATOMIC_RELAXED);
    return Py_BuildValue("(KL)", pages, first == UINTPTR_MAX ? -1LL : (long long)first);
#else
    return Py_BuildValue("(KL)", 0ULL, -1LL);
#endif
}

PyDoc_STRVAR(unguard_mapping_doc,
             "unguard_mapping(slot)\n\nStop guarding (before the mapping is closed).");

static PyObject *unguard_mapping(PyObject *self, PyObject *arg)
{
    long slot;
    if (guard_slot(arg, &slot) < 0)
        return NULL;
#ifdef HAVE_GUARDS
    __atomic_store_n(&guards[slot].start, 0, __ATOMIC_RELEASE);
#endif
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"walk_pcap", walk_pcap, METH_VARARGS, walk_pcap_doc},
    {"walk_pcapng", walk_pcapng, METH_VARARGS, walk_pcapng_doc},
    {"rtp_update", rtp_update, METH_VARARGS, rtp_update_doc},
    {"decode_headers", (PyCFunction)(void (*)(void))decode_headers, METH_FASTCALL,
     decode_headers_doc},
    {"zoom_classify", (PyCFunction)(void (*)(void))zoom_classify, METH_FASTCALL,
     zoom_classify_doc},
    {"gather_be", (PyCFunction)(void (*)(void))gather_be, METH_FASTCALL, gather_be_doc},
    {"find_media", (PyCFunction)(void (*)(void))find_media, METH_FASTCALL, find_media_doc},
    {"flow_keys", (PyCFunction)(void (*)(void))flow_keys, METH_FASTCALL, flow_keys_doc},
    {"client_hello", (PyCFunction)(void (*)(void))client_hello, METH_FASTCALL,
     client_hello_doc},
    {"dns_message", dns_message, METH_O, dns_message_doc},
    {"guard_mapping", guard_mapping, METH_O, guard_mapping_doc},
    {"guarded_faults", guarded_faults, METH_O, guarded_faults_doc},
    {"unguard_mapping", unguard_mapping, METH_O, unguard_mapping_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "analyzer._speedups",
    .m_doc = "C fast paths for confscope (see analyzer/speedups.py).",
    .m_size = -1,
    .m_methods = methods,
};

/* Adds a new reference `value` (NULL: an error is set) to the module. */
static int add_object(PyObject *m, const char *name, PyObject *value)
{
    int failed = value == NULL || PyModule_AddObjectRef(m, name, value) < 0;
    Py_XDECREF(value);
    return failed ? -1 : 0;
}

static int add_constants(PyObject *m)
{
    if (add_object(m, "RTP_STATE_LAYOUT", state_layout()) < 0 ||
        add_object(m, "HEADER_COLUMNS", spec_names(HEADER_COLUMNS, N_HEADER_COLUMNS)) < 0 ||
        add_object(m, "ZOOM_COLUMNS", spec_names(ZOOM_COLUMNS, N_ZOOM_COLUMNS)) < 0 ||
        add_object(m, "RTP_PACKET_COLUMNS", spec_names(MP_COLUMNS, N_MP_COLUMNS)) < 0 ||
        add_object(m, "RTCP_COLUMNS", spec_names(MR_COLUMNS, N_MR_COLUMNS)) < 0)
        return -1;
    return add_object(m, "ZOOM_MEDIA_KINDS", name_tuple(MEDIA_KIND_NAMES, N_MEDIA_KINDS));
}

PyMODINIT_FUNC PyInit__speedups(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (add_constants(m) < 0 ||
        PyModule_AddIntConstant(m, "API_VERSION", API_VERSION) < 0 ||
        PyModule_AddIntConstant(m, "RTP_STATE_SIZE", (long)sizeof(RtpState)) < 0 ||
        PyModule_AddIntConstant(m, "RTP_DUPLICATE_WINDOW", DUPLICATE_WINDOW) < 0 ||
        PyModule_AddIntConstant(m, "PCAP_CAPLEN_TOO_LARGE", PCAP_CAPLEN_TOO_LARGE) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
