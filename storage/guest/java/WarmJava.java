import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.FileInputStream;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.io.PrintWriter;
import java.io.RandomAccessFile;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.Permission;
import java.util.ArrayList;
import java.util.List;

/**
 * One JVM kept warm in the java image's sandbox template, so that a pad's run does not start a JVM
 * and load javac from cold (12 s under TCG): every pooled clone inherits this process, with javac's
 * classes loaded and compiled by the JIT during the template's warm-up.
 *
 * Requests come one per write on the FIFO CTL.req from `java-warm` (see that script): the mode,
 * the client's pid, its reply FIFO, its working directory, then the arguments. "warm" compiles and
 * runs a program and stays; "javac" runs javac and stays; "run" makes this JVM the program: its
 * System.in, out and err become the client's fds 0, 1 and 2 (opened through /proc), the source-file
 * launcher of jdk.compiler compiles and runs it exactly as `java FILE.java` does, and the program's
 * exit status goes back on the reply FIFO, after which this process exits. A clone serves one run
 * and is thrown away, so no program ever shares this JVM with another. When the client dies (the
 * run's timeout kills it), this JVM halts at once, which closes the run's output pipe.
 */
@SuppressWarnings("removal")
public final class WarmJava {
    static final String CTL = "/run/oh/java";

    static volatile String reply;         // the run's reply FIFO (null while warming)
    static volatile boolean replied;

    public static void main(String[] args) throws Exception {
        PrintStream log = System.err;   // the server's own (the template's warm-up: /dev/null)
        try {
            loop();
        } catch (Throwable t) {
            t.printStackTrace(log);
            throw t;
        }
    }

    static void loop() throws Exception {
        Method launcher = Class.forName("com.sun.tools.javac.launcher.Main").getMethod("main", String[].class);
        System.setSecurityManager(new ExitWatch());
        Files.writeString(Path.of(CTL + ".pid"), ProcessHandle.current().pid() + "\n");
        String here = System.getProperty("user.dir");
        // read-write: the FIFO then never reads end-of-file between two clients
        try (RandomAccessFile requests = new RandomAccessFile(CTL + ".req", "rw")) {
            for (;;) {
                String mode = requests.readLine();
                if (mode == null) {
                    return;
                }
                long pid = Long.parseLong(requests.readLine());
                String replyTo = requests.readLine();
                String cwd = requests.readLine();
                int count = Integer.parseInt(requests.readLine());
                List<String> argv = new ArrayList<>();
                for (int i = 0; i < count; i++) {
                    argv.add(requests.readLine());
                }
                boolean elsewhere = !cwd.equals(here);   // this JVM cannot change directory
                if (mode.equals("javac")) {
                    javac(pid, replyTo, elsewhere, argv.toArray(new String[0]));
                    continue;
                }
                if (!argv.isEmpty() && !argv.get(0).startsWith("/") && elsewhere) {
                    argv.set(0, cwd + "/" + argv.get(0));
                }
                serve(launcher, mode.equals("run"), pid, replyTo, argv.toArray(new String[0]));
            }
        }
    }

    static void serve(Method launcher, boolean run, long pid, String replyTo, String[] argv) {
        BufferedInputStream in = null;
        PrintStream out = null;
        PrintStream err = null;
        int status = 1;
        try {
            String fds = "/proc/" + pid + "/fd/";
            in = new BufferedInputStream(new FileInputStream(fds + "0"));
            System.setIn(in);
            out = new PrintStream(new BufferedOutputStream(new FileOutputStream(fds + "1", true), 8192), true,
                                  StandardCharsets.UTF_8);
            err = new PrintStream(new BufferedOutputStream(new FileOutputStream(fds + "2", true), 8192), true,
                                  StandardCharsets.UTF_8);
            System.setOut(out);
            System.setErr(err);
            if (run) {
                reply = replyTo;
                watch(pid);
            }
            launcher.invoke(null, (Object) argv);
            if (run) {
                joinOthers();
            }
            status = 0;
        } catch (InvocationTargetException e) {
            Throwable cause = e.getCause();   // the launcher rethrows the program's own exception
            if (!(cause instanceof Stop)) {
                System.err.print("Exception in thread \"main\" ");
                cause.printStackTrace();
            } else {
                status = ((Stop) cause).status;
            }
        } catch (Throwable t) {
            System.err.println("java-warm: " + t);
        }
        if (run) {
            System.exit(status);   // through ExitWatch: the status goes back to the client
        }
        send(replyTo, status);
        System.setOut(new PrintStream(PrintStream.nullOutputStream()));
        System.setErr(new PrintStream(PrintStream.nullOutputStream()));
        for (java.io.Closeable stream : new java.io.Closeable[] {in, out, err}) {
            try {
                if (stream != null) {
                    stream.close();
                }
            } catch (IOException e) {
                // a warm-up's stream: nothing to save
            }
        }
    }

    /** `javac ARGS` in this JVM (its arguments are relative to this JVM's directory); it stays. */
    static void javac(long pid, String replyTo, boolean elsewhere, String[] argv) {
        int status = 2;
        try (PrintWriter err = new PrintWriter(new FileOutputStream("/proc/" + pid + "/fd/2", true), true,
                                               StandardCharsets.UTF_8)) {
            if (elsewhere) {
                err.println("java-warm: --javac runs in " + System.getProperty("user.dir") + " only");
            } else {
                status = com.sun.tools.javac.Main.compile(argv, err);
            }
        } catch (IOException e) {
            status = 2;
        }
        send(replyTo, status);
    }

    /** Like the java launcher after main returns: wait for the program's other non-daemon threads. */
    static void joinOthers() throws InterruptedException {
        for (;;) {
            Thread other = null;
            for (Thread t : Thread.getAllStackTraces().keySet()) {
                if (t != Thread.currentThread() && !t.isDaemon() && t.isAlive()) {
                    other = t;
                    break;
                }
            }
            if (other == null) {
                return;
            }
            other.join();
        }
    }

    /** Halt as soon as the client is gone: its run timed out or was cancelled. */
    static void watch(long pid) {
        Path proc = Path.of("/proc/" + pid);
        Thread watcher = new Thread(() -> {
            while (Files.exists(proc)) {
                try {
                    Thread.sleep(20);
                } catch (InterruptedException e) {
                    return;
                }
            }
            Runtime.getRuntime().halt(137);
        }, "java-warm watcher");
        watcher.setDaemon(true);
        watcher.start();
    }

    /** The status on the client's reply FIFO, opened read-write: that never blocks, and the client
     *  holds it open from before its request, so the line waits there even for a slow reader. */
    static synchronized void send(String to, int status) {
        System.out.flush();
        System.err.flush();
        try (RandomAccessFile fifo = new RandomAccessFile(to, "rw")) {
            fifo.write((status + "\n").getBytes(StandardCharsets.US_ASCII));
        } catch (IOException e) {
            Runtime.getRuntime().halt(status);
        }
    }

    /** Thrown instead of exiting while warming (a program that calls System.exit ends the request). */
    static final class Stop extends SecurityException {
        final int status;

        Stop(int status) {
            super("exit " + status);
            this.status = status;
        }
    }

    /** The only way to learn a program's exit status in Java 17: sent back before the JVM exits. */
    static final class ExitWatch extends SecurityManager {
        @Override
        public void checkExit(int status) {
            String to = reply;
            if (to == null) {
                throw new Stop(status);
            }
            if (!replied) {
                replied = true;
                send(to, status);
            }
        }

        @Override
        public void checkPermission(Permission perm) {
        }

        @Override
        public void checkPermission(Permission perm, Object context) {
        }
    }
}
