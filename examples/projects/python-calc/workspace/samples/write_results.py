# Writes a few result files into the directory given (the `auxdata` scenario collects it).
import os
import sys

out = sys.argv[1] if len(sys.argv) > 1 else "out"
os.makedirs(os.path.join(out, "plots"), exist_ok=True)
with open(os.path.join(out, "summary.txt"), "w") as f:
    f.write("6 * 7 = 42\n")
with open(os.path.join(out, "plots", "data.csv"), "w") as f:
    f.write("x,y\n1,1\n2,4\n3,9\n")
os.symlink("/etc/passwd", os.path.join(out, "link-to-passwd"))
print("wrote", sorted(os.listdir(out)))
