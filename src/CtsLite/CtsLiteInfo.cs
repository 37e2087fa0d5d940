namespace CtsLite
{
    /// <summary>Facts about this build of the CtsLite library.</summary>
    public static class CtsLiteInfo
    {
        /// <summary>The library version, e.g. <c>0.1.0</c>.</summary>
        public static string Version => Product.version;

        /// <summary>The version of the CtsLite service's <c>/v1</c> HTTP API this library speaks.</summary>
        public static string ApiVersion => Product.ApiVersion;
    }
}
