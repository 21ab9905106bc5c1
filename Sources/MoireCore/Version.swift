/// The release of the Moiré binaries (`moire --version`, `moired --version`).
public enum MoireVersion {
    public static let string = "0.9.0"
}
