/* fcgi_records.c: reads FastCGI records incrementally (header, content, padding), and writes record headers. */
#include "fcgi_records.h"

#include <string.h>

static size_t smaller(size_t a, size_t b) { return a < b ? a : b; }

enum fcgi_read_result fcgi_read(struct fcgi_reader *r, const unsigned char *data, size_t len, size_t *used,
                                struct fcgi_record *record)
{
    size_t at = 0, take, offset;
    if (r->header_have < FCGI_HEADER_LEN) {
        take = smaller(FCGI_HEADER_LEN - r->header_have, len);
        memcpy(r->header + r->header_have, data, take);
        r->header_have += take;
        at = take;
        if (r->header_have < FCGI_HEADER_LEN) goto more;
        if (r->header[0] != FCGI_VERSION_1) {
            *used = at;
            return FCGI_READ_BAD;
        }
        r->record.type = r->header[1];
        r->record.request_id = (unsigned)r->header[2] << 8 | r->header[3];
        r->record.content_length = (size_t)r->header[4] << 8 | r->header[5];
        r->content_left = r->record.content_length;
        r->padding_left = r->header[6];
    }
    /* Content: the first bytes are kept, the rest skipped; then the padding. */
    take = smaller(r->content_left, len - at);
    offset = r->record.content_length - r->content_left;
    if (offset < sizeof r->record.head)
        memcpy(r->record.head + offset, data + at, smaller(take, sizeof r->record.head - offset));
    r->content_left -= take;
    at += take;
    take = r->content_left ? 0 : smaller(r->padding_left, len - at);
    r->padding_left -= take;
    at += take;
    if (r->content_left || r->padding_left) goto more;
    *record = r->record;
    r->header_have = 0;
    *used = at;
    return FCGI_READ_RECORD;
more:
    *used = at;
    return FCGI_READ_MORE;
}

void fcgi_header(unsigned char *out, unsigned type, unsigned request_id, size_t content_length)
{
    out[0] = FCGI_VERSION_1;
    out[1] = (unsigned char)type;
    out[2] = (unsigned char)(request_id >> 8);
    out[3] = (unsigned char)request_id;
    out[4] = (unsigned char)(content_length >> 8);
    out[5] = (unsigned char)content_length;
    out[6] = 0; /* no padding */
    out[7] = 0;
}
