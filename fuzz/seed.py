#!/usr/bin/env python3
"""Seeds fuzz/corpus/ from real inputs: samples/ (the vendor's documented answers, the sample
fleet), the bodies a sandbox run stored in its checkpoint, and the user guide's vmr.toml.

    target/debug/vmr --sandbox run --input samples/fleet.csv    # fills vmr-sandbox-state/
    python3 fuzz/seed.py vmr-sandbox-state/checkpoint.sqlite

Each target's first byte picks a variant (see src/fuzz.rs); seeds are written for the useful
ones. Re-running it is harmless: files are named by the SHA-1 of their content, as libFuzzer
names its own."""
import hashlib, os, pathlib, re, sqlite3, sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Into the working corpus (ignored by git); FUZZ_SEED_INTO=DIR writes elsewhere, e.g. an empty
# directory for pick_seeds.py.
CORPUS = pathlib.Path(os.environ.get("FUZZ_SEED_INTO", ROOT / "fuzz" / "corpus"))


def put(target, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()).write_bytes(data)


# response: byte 0 = endpoint (bit 0: get) + status index (bits 1..: 200,200,200,204,404,429,502,503)
for f in sorted((ROOT / "samples" / "responses").iterdir()):
    if f.suffix not in (".json", ".html"):
        continue
    body = f.read_bytes()
    get = 1 if f.name.startswith("get") else 0
    put("response", bytes([get]) + body)
    if f.suffix == ".html":
        put("response", bytes([get | (6 << 1)]) + body)
    if f.name.endswith("_200.json") or "inline" in f.name:
        put("report", bytes([get]) + body)

# The sandbox's bodies: reports (with the untidy values it sends) and other billed answers.
if len(sys.argv) > 1:
    db = sqlite3.connect(sys.argv[1])
    for endpoint, body in db.execute("SELECT endpoint, body FROM reports ORDER BY vin LIMIT 40"):
        get = 1 if endpoint == "get" else 0
        put("report", bytes([get]) + body)
        put("response", bytes([get]) + body)
    for endpoint, body in db.execute(
        "SELECT endpoint, body FROM calls WHERE body IS NOT NULL ORDER BY id LIMIT 20"
    ):
        put("response", bytes([1 if endpoint == "get" else 0]) + body)

# input_csv: byte 0 = encoding option (0 detect, 1 utf-8, 2 gbk, 3 gb18030).
fleet = (ROOT / "samples" / "fleet.csv").read_bytes()
head = b"\n".join(fleet.split(b"\n")[:12]) + b"\n"
put("input_csv", b"\x00" + head)
put("input_csv", b"\x00\xef\xbb\xbf" + head.replace(b"\n", b"\r\n"))
put("input_csv", b"\x02" + head.decode().encode("gbk"))
put("input_csv", b"\x00" + head.decode().encode("gb18030"))
put("input_csv", b"\x00" + head.replace(b"vin,", b"VIN;", 1).replace(b",", b";"))
put("input_csv", b"\x00vin,licenseImgUrl\n\"LSVXBKCT6RG559080,https://x/1.jpg\nLFVKM4DW9R9557431,https://x/2.jpg\n")

# config: the user guide's example vmr.toml, and a few variants.
readme = (ROOT / "docs" / "user-guide.md").read_text()
m = re.search(r"```toml\n(.*?)```", readme, re.S)
if m:
    put("config", m.group(1).encode())
put("config", b'rate = 5\nformats = ["parquet", "csv"]\nmax-wait = "10m"\n')
put("config", b'[sandbox]\nseed = 3\n')
put("config", b'app_secret = "abcdefgh12345678"\n')

# report_shaped: arbitrary decodes any bytes into a REPORT; a few fixed pseudo-random seeds.
for i in range(4):
    put("report_shaped", b"".join(hashlib.sha512(bytes([i, j])).digest() for j in range(4 << i)))
