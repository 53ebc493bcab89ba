/*
 * Lossless JPEG mosaics: join a grid of baseline JPEG tiles that share their
 * quantisation tables and sampling factors into one JPEG, cropped, by copying
 * DCT coefficient blocks (as jpegtran's -crop does within one image). Nothing
 * is decoded to pixels or quantised again: the output carries exactly the
 * tiles' coefficients, re-entropy-coded.
 *
 * Built by decoder/native/build.py (cffi, API mode) against the system
 * libjpeg (libjpeg-turbo's libjpeg.so.62 on Debian, which libvips links too).
 */
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

/* libjpeg reports errors through error_exit, which by default calls exit():
 * jump back to the caller instead. Warnings (corrupt data that libjpeg would
 * "recover" from by inventing grey blocks) are errors here too: the caller
 * then takes the decoding path, which reports the file properly. */
struct mosaic_error {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char *message;
    size_t message_size;
};

static void mosaic_error_exit(j_common_ptr cinfo)
{
    struct mosaic_error *err = (struct mosaic_error *)cinfo->err;
    char text[JMSG_LENGTH_MAX];
    (*cinfo->err->format_message)(cinfo, text);
    snprintf(err->message, err->message_size, "%s", text);
    longjmp(err->jump, 1);
}

static void mosaic_emit_message(j_common_ptr cinfo, int level)
{
    if (level < 0)
        mosaic_error_exit(cinfo);
}

static int fail(char *message, size_t message_size, const char *text)
{
    snprintf(message, message_size, "%s", text);
    return -1;
}

static int same_quant(const JQUANT_TBL *a, const JQUANT_TBL *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    return memcmp(a->quantval, b->quantval, sizeof(a->quantval)) == 0;
}

static void reject(struct mosaic_error *err, const char *text)
{
    snprintf(err->message, err->message_size, "%s", text);
    longjmp(err->jump, 1);
}

/* Each libjpeg object may hold this much (coefficient arrays above all); past
 * it libjpeg asks for a backing store, which this build refuses: an error,
 * not an allocation of whatever a hostile header claims. */
#define MOSAIC_MAX_MEMORY (64L * 1024 * 1024)

/* A growing output buffer the caller owns at every point (libjpeg's
 * jpeg_mem_dest frees and replaces its buffer as it grows, and only says
 * where it is at the end: on an error half-way, ours is still ours). */
struct grow_dest {
    struct jpeg_destination_mgr pub;
    unsigned char *buffer;
    size_t size;
};

static void grow_init(j_compress_ptr cinfo)
{
    struct grow_dest *dest = (struct grow_dest *)cinfo->dest;
    dest->pub.next_output_byte = dest->buffer;
    dest->pub.free_in_buffer = dest->size;
}

static boolean grow_empty(j_compress_ptr cinfo)
{
    struct grow_dest *dest = (struct grow_dest *)cinfo->dest;
    size_t size = dest->size * 2;
    unsigned char *buffer = realloc(dest->buffer, size);
    if (buffer == NULL)
        reject((struct mosaic_error *)cinfo->err, "mosaic: out of memory");
    dest->pub.next_output_byte = buffer + dest->size;
    dest->pub.free_in_buffer = size - dest->size;
    dest->buffer = buffer;
    dest->size = size;
    return TRUE;
}

static void grow_term(j_compress_ptr cinfo)
{
    (void)cinfo;
}

/*
 * tiles: columns x rows JPEG streams, row by row, all of the same size.
 * (x0, y0, width, height): the output's box in the mosaic's pixels; x0 and y0
 * must be multiples of the MCU size, and the box must lie in the mosaic.
 * On success returns 0 and a malloc'd JPEG in *out (free it with
 * iiif_jpeg_free); on failure returns -1 with a reason in message, or -2
 * when only the origin is off the MCU grid (which the caller cannot know
 * before the tiles' sampling factors are read).
 */
int iiif_jpeg_mosaic(const unsigned char *const *tiles, const size_t *sizes, int columns,
                     int rows, int x0, int y0, int width, int height, int optimize,
                     unsigned char **out, unsigned long *out_size, char *message,
                     size_t message_size)
{
    struct mosaic_error err;
    struct jpeg_decompress_struct *volatile src = NULL;
    jvirt_barray_ptr **volatile src_coefs = NULL;
    struct jpeg_compress_struct dst;
    struct grow_dest out_dest;
    volatile int created = 0, dst_created = 0, reject_status = -1;
    jvirt_barray_ptr dst_coefs[MAX_COMPONENTS];
    long dst_bw[MAX_COMPONENTS], dst_bh[MAX_COMPONENTS];
    int count, i, c;
    volatile size_t total = 0;

    memset(&out_dest, 0, sizeof(out_dest));
    *out = NULL;
    *out_size = 0;
    if (columns < 1 || rows < 1 || columns > 64 || rows > 64)
        return fail(message, message_size, "columns and rows must be 1 to 64");
    if (x0 < 0 || y0 < 0 || width < 1 || height < 1)
        return fail(message, message_size, "empty or negative box");
    count = columns * rows;
    src = calloc((size_t)count, sizeof(*src));
    src_coefs = calloc((size_t)count, sizeof(*src_coefs));
    if (src == NULL || src_coefs == NULL) {
        free(src);
        free(src_coefs);
        return fail(message, message_size, "out of memory");
    }

    memset(&err, 0, sizeof(err));
    jpeg_std_error(&err.pub);
    err.pub.error_exit = mosaic_error_exit;
    err.pub.emit_message = mosaic_emit_message;
    err.message = message;
    err.message_size = message_size;
    if (setjmp(err.jump)) {
        if (dst_created)
            jpeg_destroy_compress(&dst);
        for (i = 0; i < created; i++)
            jpeg_destroy_decompress(&src[i]);
        free(out_dest.buffer);
        free(src);
        free(src_coefs);
        return reject_status;
    }

    for (i = 0; i < count; i++) {
        struct jpeg_decompress_struct *s = &src[i];
        s->err = &err.pub;
        jpeg_create_decompress(s);
        created = i + 1;
        s->mem->max_memory_to_use = MOSAIC_MAX_MEMORY;
        total += sizes[i];
        jpeg_mem_src(s, tiles[i], (unsigned long)sizes[i]);
        jpeg_read_header(s, TRUE);
        if (s->progressive_mode || s->arith_code || s->data_precision != 8)
            reject(&err, "mosaic: baseline 8-bit Huffman tiles only");
        src_coefs[i] = jpeg_read_coefficients(s);
        /* Compared once read: only then has libjpeg checked each component's
         * table number and kept the table it used (quant_table); the
         * numbers in the frame header are unchecked bytes. */
        for (c = 0; c < s->num_components; c++) {
            if (s->comp_info[c].quant_table == NULL)
                reject(&err, "mosaic: a component has no quantisation table");
        }
        if (i > 0) {
            const struct jpeg_decompress_struct *f = &src[0];
            int ok = s->image_width == f->image_width && s->image_height == f->image_height &&
                     s->num_components == f->num_components &&
                     s->jpeg_color_space == f->jpeg_color_space;
            for (c = 0; ok && c < s->num_components; c++) {
                ok = s->comp_info[c].component_id == f->comp_info[c].component_id &&
                     s->comp_info[c].h_samp_factor == f->comp_info[c].h_samp_factor &&
                     s->comp_info[c].v_samp_factor == f->comp_info[c].v_samp_factor &&
                     same_quant(s->comp_info[c].quant_table, f->comp_info[c].quant_table);
            }
            if (!ok)
                reject(&err, "mosaic: tiles differ in size, components or tables");
        }
    }

    const struct jpeg_decompress_struct *f = &src[0];
    const int max_h = f->max_h_samp_factor, max_v = f->max_v_samp_factor;
    const int mcu_w = max_h * DCTSIZE, mcu_h = max_v * DCTSIZE;
    if (f->image_width % mcu_w || f->image_height % mcu_h)
        reject(&err, "mosaic: tile size is not a multiple of the MCU");
    if (x0 % mcu_w || y0 % mcu_h) {
        reject_status = -2;
        reject(&err, "mosaic: box origin is not on an MCU boundary");
    }
    if ((long)x0 + width > (long)columns * f->image_width ||
        (long)y0 + height > (long)rows * f->image_height)
        reject(&err, "mosaic: box outside the tiles");

    dst.err = &err.pub;
    jpeg_create_compress(&dst);
    dst_created = 1;
    dst.mem->max_memory_to_use = MOSAIC_MAX_MEMORY;
    /* The tiles' size is about the output's: usually no growing at all. */
    out_dest.size = total + 4096;
    out_dest.buffer = malloc(out_dest.size);
    if (out_dest.buffer == NULL)
        reject(&err, "mosaic: out of memory");
    out_dest.pub.init_destination = grow_init;
    out_dest.pub.empty_output_buffer = grow_empty;
    out_dest.pub.term_destination = grow_term;
    dst.dest = &out_dest.pub;
    jpeg_copy_critical_parameters(&src[0], &dst);
    dst.image_width = (JDIMENSION)width;
    dst.image_height = (JDIMENSION)height;
    dst.optimize_coding = optimize ? TRUE : FALSE;

    for (c = 0; c < dst.num_components; c++) {
        const jpeg_component_info *comp = &dst.comp_info[c];
        /* This component's blocks under the box, padded to whole MCUs (the
         * encoder reads whole MCUs). The tiles always have them: tiles and
         * origin are MCU-aligned. */
        long w = ((long)width * comp->h_samp_factor + max_h - 1) / max_h;
        long h = ((long)height * comp->v_samp_factor + max_v - 1) / max_v;
        w = (w + DCTSIZE - 1) / DCTSIZE;
        h = (h + DCTSIZE - 1) / DCTSIZE;
        dst_bw[c] = (w + comp->h_samp_factor - 1) / comp->h_samp_factor * comp->h_samp_factor;
        dst_bh[c] = (h + comp->v_samp_factor - 1) / comp->v_samp_factor * comp->v_samp_factor;
        dst_coefs[c] = (*dst.mem->request_virt_barray)((j_common_ptr)&dst, JPOOL_IMAGE, FALSE,
                                                       (JDIMENSION)dst_bw[c],
                                                       (JDIMENSION)dst_bh[c],
                                                       (JDIMENSION)comp->v_samp_factor);
    }
    (*dst.mem->realize_virt_arrays)((j_common_ptr)&dst);

    for (c = 0; c < dst.num_components; c++) {
        const jpeg_component_info *comp = &dst.comp_info[c];
        /* Tile size and box origin in this component's blocks. */
        const long tile_bw = (long)f->image_width / mcu_w * comp->h_samp_factor;
        const long tile_bh = (long)f->image_height / mcu_h * comp->v_samp_factor;
        const long ox = (long)x0 / mcu_w * comp->h_samp_factor;
        const long oy = (long)y0 / mcu_h * comp->v_samp_factor;
        long by, bx;
        for (by = 0; by < dst_bh[c]; by++) {
            JBLOCKROW out_row = (*dst.mem->access_virt_barray)(
                (j_common_ptr)&dst, dst_coefs[c], (JDIMENSION)by, 1, TRUE)[0];
            const long my = oy + by, ty = my / tile_bh, iy = my % tile_bh;
            for (bx = 0; bx < dst_bw[c];) {
                const long mx = ox + bx, tx = mx / tile_bw, ix = mx % tile_bw;
                long run = tile_bw - ix;
                const int t = (int)(ty * columns + tx);
                JBLOCKROW in_row;
                if (run > dst_bw[c] - bx)
                    run = dst_bw[c] - bx;
                in_row = (*src[t].mem->access_virt_barray)(
                    (j_common_ptr)&src[t], src_coefs[t][c], (JDIMENSION)iy, 1, FALSE)[0];
                memcpy(out_row[bx], in_row[ix], (size_t)run * sizeof(JBLOCK));
                bx += run;
            }
        }
    }

    jpeg_write_coefficients(&dst, dst_coefs);
    jpeg_finish_compress(&dst);
    *out = out_dest.buffer;
    *out_size = (unsigned long)(out_dest.size - out_dest.pub.free_in_buffer);
    jpeg_destroy_compress(&dst);
    for (i = 0; i < count; i++)
        jpeg_destroy_decompress(&src[i]);
    free(src);
    free(src_coefs);
    return 0;
}

void iiif_jpeg_free(unsigned char *buffer)
{
    free(buffer);
}
