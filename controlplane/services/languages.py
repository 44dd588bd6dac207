"""The pads face's languages: CoderPad's ids, which of them run, in which image, with which command.

Pads and questions accept every id of CoderPad's public list (so a `postgresql` question is stored);
only the rows of `RUNNABLE` run, each in its own guest image (a manifest entry of
storage/guest/images.toml). `python` (CoderPad's Python 2) is not accepted.
"""

from __future__ import annotations

from dataclasses import dataclass

# CoderPad's language ids (single-file, then multi-file and framework ones), less `python` (2).
KNOWN = frozenset("""
bash c clojure coffeescript cpp csharp dart elixir erlang fsharp go gsheets hack haskell html java
javascript julia kotlin lua markdown mysql objc ocaml perl php plaintext postgresql powershell python3 r
ruby rust scala solidity swift tcl typescript vb verilog
angular django gin kubernetes multifile_c multifile_cpp multifile_csharp multifile_go multifile_java
multifile_kotlin multifile_php multifile_python multifile_ruby multifile_rust multifile_scala
multifile_swift multifile_terraform multifile_typescript nextjs nodejs rails react react-native-web
spring svelte universal vue
""".split())

NAMES = {"python3": "Python 3", "javascript": "JavaScript", "typescript": "TypeScript", "ruby": "Ruby",
         "php": "PHP", "bash": "Bash", "c": "C", "cpp": "C++", "java": "Java", "go": "Go", "rust": "Rust",
         "plaintext": "Plain Text", "csharp": "C#", "postgresql": "PostgreSQL", "mysql": "MySQL",
         "objc": "Objective-C", "fsharp": "F#", "vb": "Visual Basic"}


@dataclass(frozen=True)
class Language:
    id: str
    file: str
    image: str | None
    command: str | None
    timeout: int
    example: str

    @property
    def runnable(self) -> bool:
        return self.image is not None

    @property
    def name(self) -> str:
        return NAMES.get(self.id, self.id.replace("_", " ").title())


HELLO_C = '#include <stdio.h>\n\nint main(void) {\n    printf("Hello, World!\\n");\n    return 0;\n}\n'
# <cstdio>, not <iostream>: g++ parses iostream for minutes under TCG on a loaded host (a test run
# timed out at 120 s), and the example is what every new C++ pad compiles first.
HELLO_CPP = '#include <cstdio>\n\nint main() {\n    std::printf("Hello, World!\\n");\n    return 0;\n}\n'
HELLO_JAVA = ('public class Solution {\n    public static void main(String[] args) {\n'
              '        System.out.println("Hello, World!");\n    }\n}\n')
HELLO_GO = 'package main\n\nimport "fmt"\n\nfunc main() {\n\tfmt.Println("Hello, World!")\n}\n'

RUNNABLE = {lang.id: lang for lang in (
    Language("python3", "main.py", "base", "python3 main.py", 10, 'print("Hello, World!")\n'),
    Language("javascript", "main.js", "node", "node main.js", 10, 'console.log("Hello, World!");\n'),
    Language("typescript", "main.ts", "typescript",
             "tsc --target es2020 --module commonjs --skipLibCheck --outDir out main.ts && node out/main.js", 60,
             'const greeting: string = "Hello, World!";\nconsole.log(greeting);\n'),
    Language("ruby", "main.rb", "ruby", "ruby main.rb", 10, "5.times do\n  puts 'Hello, World!'\nend\n"),
    Language("php", "main.php", "php", "php main.php", 10, '<?php\necho "Hello, World!\\n";\n'),
    Language("bash", "main.sh", "base", "bash main.sh", 10, 'echo "Hello, World!"\n'),
    Language("c", "main.c", "gcc", "gcc -O2 -std=gnu17 -o main main.c -lm && ./main", 30, HELLO_C),
    Language("cpp", "main.cpp", "gcc", "g++ -O2 -std=gnu++17 -o main main.cpp && ./main", 30, HELLO_CPP),
    Language("java", "Solution.java", "java",
             "java-warm Solution.java", 30, HELLO_JAVA),
    Language("go", "main.go", "go", "HOME=/tmp GOCACHE=/tmp/gocache go run main.go", 30, HELLO_GO),
    Language("rust", "main.rs", "rust", "rustc --edition 2021 -O -o main main.rs && ./main", 30,
             'fn main() {\n    println!("Hello, World!");\n}\n'),
)}

_EXT = {"plaintext": "txt", "csharp": "cs", "kotlin": "kt", "scala": "scala", "haskell": "hs",
        "perl": "pl", "lua": "lua", "swift": "swift", "postgresql": "sql", "mysql": "sql", "r": "r",
        "elixir": "exs", "erlang": "erl", "markdown": "md", "html": "html", "ocaml": "ml", "dart": "dart",
        "julia": "jl", "clojure": "clj", "fsharp": "fs", "vb": "vb", "tcl": "tcl", "objc": "m"}


def get(language_id: str) -> Language:
    """The language `language_id` (a known id: check with `known` first)."""
    if language_id in RUNNABLE:
        return RUNNABLE[language_id]
    return Language(language_id, f"main.{_EXT.get(language_id, 'txt')}", None, None, 0, "")


def known(language_id: str) -> bool:
    return language_id in KNOWN


def catalogue() -> list[Language]:
    return [get(i) for i in sorted(KNOWN)]
