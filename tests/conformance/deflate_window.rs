//! The longest back-reference of a raw deflate stream (RFC 1951), read by a small decoder of the suite's
//! own: zlib's inflaters read a reference into the output of the same call whatever window they were
//! given, so only reading the stream tells whether a server kept to the window (and, without context
//! takeover, to the message) it agreed to.

const LENGTH_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LENGTH_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
const DISTANCE_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DISTANCE_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];
/// The order of the code length code lengths in a dynamic block header.
const CODE_LENGTH_ORDER: [usize; 19] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];

struct Bits<'a> {
    data: &'a [u8],
    /// Position in bits.
    pos: usize,
}

impl Bits<'_> {
    fn bit(&mut self) -> Result<u32, String> {
        let byte = *self
            .data
            .get(self.pos / 8)
            .ok_or("the stream ends inside a block")?;
        let bit = (byte >> (self.pos % 8)) & 1;
        self.pos += 1;
        Ok(u32::from(bit))
    }

    fn bits(&mut self, n: u8) -> Result<u32, String> {
        let mut value = 0;
        for i in 0..n {
            value |= self.bit()? << i;
        }
        Ok(value)
    }
}

/// A canonical Huffman code: how many codes of each length, and the symbols in code order.
struct Huffman {
    count: [u16; 16],
    symbols: Vec<u16>,
}

impl Huffman {
    fn new(lengths: &[u8]) -> Huffman {
        let mut count = [0u16; 16];
        for &len in lengths {
            count[len as usize] += 1;
        }
        count[0] = 0;
        let mut offsets = [0u16; 16];
        for len in 1..15 {
            offsets[len + 1] = offsets[len] + count[len];
        }
        let mut symbols = vec![0u16; lengths.len()];
        for (symbol, &len) in lengths.iter().enumerate() {
            if len != 0 {
                symbols[offsets[len as usize] as usize] = symbol as u16;
                offsets[len as usize] += 1;
            }
        }
        Huffman { count, symbols }
    }

    fn decode(&self, bits: &mut Bits<'_>) -> Result<u16, String> {
        let (mut code, mut first, mut index) = (0i32, 0i32, 0i32);
        for len in 1..16 {
            code |= bits.bit()? as i32;
            let count = i32::from(self.count[len]);
            if code - count < first {
                return self
                    .symbols
                    .get((index + code - first) as usize)
                    .copied()
                    .ok_or_else(|| "bad Huffman code".to_string());
            }
            index += count;
            first = (first + count) << 1;
            code <<= 1;
        }
        Err("bad Huffman code".into())
    }
}

/// Reads a whole raw deflate stream (a message's payload with its `00 00 ff ff` tail); returns (the
/// longest distance any back-reference uses, the output length). `standalone`: a reference before the
/// start of the message is an error (no context takeover).
pub fn longest_reference(data: &[u8], standalone: bool) -> Result<(usize, usize), String> {
    let mut bits = Bits { data, pos: 0 };
    let (mut longest, mut out) = (0usize, 0usize);
    while bits.pos < data.len() * 8 {
        let last = bits.bits(1)? == 1;
        match bits.bits(2)? {
            0 => {
                bits.pos = bits.pos.div_ceil(8) * 8;
                let len = bits.bits(16)? as usize;
                let nlen = bits.bits(16)? as usize;
                if len != !nlen & 0xffff {
                    return Err("stored block length mismatch".into());
                }
                bits.pos += len * 8;
                if bits.pos > data.len() * 8 {
                    return Err("stored block past the end".into());
                }
                out += len;
            }
            kind @ (1 | 2) => {
                let (literals, distances) = if kind == 1 {
                    let mut lengths = [8u8; 288];
                    lengths[144..256].fill(9);
                    lengths[256..280].fill(7);
                    (Huffman::new(&lengths), Huffman::new(&[5u8; 30]))
                } else {
                    dynamic_codes(&mut bits)?
                };
                loop {
                    let symbol = literals.decode(&mut bits)? as usize;
                    if symbol < 256 {
                        out += 1;
                    } else if symbol == 256 {
                        break;
                    } else {
                        let index = symbol - 257;
                        let length = *LENGTH_BASE.get(index).ok_or("bad length symbol")? as usize
                            + bits.bits(LENGTH_EXTRA[index])? as usize;
                        let d = distances.decode(&mut bits)? as usize;
                        let distance = *DISTANCE_BASE.get(d).ok_or("bad distance symbol")? as usize
                            + bits.bits(DISTANCE_EXTRA[d])? as usize;
                        if standalone && distance > out {
                            return Err(format!(
                                "a reference {distance} bytes back at offset {out}: before the message \
                                 (context kept without context takeover)"
                            ));
                        }
                        longest = longest.max(distance);
                        out += length;
                    }
                }
            }
            _ => return Err("reserved block type 3".into()),
        }
        if last {
            break;
        }
    }
    Ok((longest, out))
}

fn dynamic_codes(bits: &mut Bits<'_>) -> Result<(Huffman, Huffman), String> {
    let literal_count = bits.bits(5)? as usize + 257;
    let distance_count = bits.bits(5)? as usize + 1;
    let code_length_count = bits.bits(4)? as usize + 4;
    let mut code_lengths = [0u8; 19];
    for &index in &CODE_LENGTH_ORDER[..code_length_count] {
        code_lengths[index] = bits.bits(3)? as u8;
    }
    let code_lengths = Huffman::new(&code_lengths);
    let mut lengths = Vec::with_capacity(literal_count + distance_count);
    while lengths.len() < literal_count + distance_count {
        let symbol = code_lengths.decode(bits)?;
        let (value, repeat) = match symbol {
            0..=15 => (symbol as u8, 1),
            16 => (
                *lengths.last().ok_or("repeat with no length before")?,
                3 + bits.bits(2)?,
            ),
            17 => (0, 3 + bits.bits(3)?),
            _ => (0, 11 + bits.bits(7)?),
        };
        for _ in 0..repeat {
            lengths.push(value);
        }
    }
    if lengths.len() != literal_count + distance_count {
        return Err("code lengths overflow".into());
    }
    Ok((
        Huffman::new(&lengths[..literal_count]),
        Huffman::new(&lengths[literal_count..]),
    ))
}
